package caddyusage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/tenantgate/tenantgate/usagestore"
)

// The disk spool holds events the sink has not acknowledged: an
// append-only sequence of segment files spool-<sequence>.seg in the spool
// directory. A record is
//
//	length  uint32, big endian: of the payload
//	crc     uint32, big endian: CRC-32C (Castagnoli) of the payload
//	payload the event as its CloudEvents JSON
//
// Each append is one write and one fsync. Segments are replayed oldest
// first and deleted only once the sink has acknowledged every record in
// them. A torn or corrupt record ends its segment: the rest of that segment
// is skipped and counted, never fatal.

var (
	castagnoli   = crc32.MakeTable(crc32.Castagnoli)
	errSpoolFull = errors.New("usage spool is full")
)

const (
	recordHeader   = 8
	segmentPrefix  = "spool-"
	segmentSuffix  = ".seg"
	minSegmentSize = 64 << 10
	maxSegmentSize = 8 << 20
)

type segment struct {
	seq     uint64
	path    string
	size    int64 // valid bytes
	records int64
}

type spool struct {
	dir         string
	maxBytes    int64
	segmentSize int64
	metrics     *metrics
	lock        *os.File

	mu       sync.Mutex
	closed   []*segment // oldest first
	active   *os.File
	activeSg *segment
	nextSeq  uint64
	total    int64 // bytes in every segment
	count    int64 // records in every segment
}

// openSpool opens (creating) the spool directory, takes its lock, and
// scans the segments left by an earlier run.
func openSpool(dir string, maxBytes int64, m *metrics) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the usage spool directory: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &spool{dir: dir, maxBytes: maxBytes, metrics: m, lock: lock,
		segmentSize: min(max(maxBytes/8, minSegmentSize), maxSegmentSize)}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the usage spool directory: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segmentPrefix), segmentSuffix), 10, 64)
		if err != nil {
			continue
		}
		sg := &segment{seq: seq, path: filepath.Join(dir, name)}
		if err := s.scan(sg); err != nil {
			return nil, err
		}
		if sg.records == 0 {
			_ = os.Remove(sg.path)
			continue
		}
		s.closed = append(s.closed, sg)
		s.total += sg.size
		s.count += sg.records
		s.nextSeq = max(s.nextSeq, seq+1)
	}
	sort.Slice(s.closed, func(i, j int) bool { return s.closed[i].seq < s.closed[j].seq })
	return s, nil
}

// scan counts a segment's valid records and bytes; a corrupt tail is
// counted and cut off.
func (s *spool) scan(sg *segment) error {
	f, err := os.Open(sg.path)
	if err != nil {
		return fmt.Errorf("opening usage spool segment: %w", err)
	}
	defer f.Close()
	var corrupt bool
	err = readRecords(bufio.NewReader(f), func([]byte) error { return nil }, func(n int64) { sg.records++; sg.size += n }, &corrupt)
	if err != nil {
		return fmt.Errorf("reading usage spool segment %s: %w", sg.path, err)
	}
	if corrupt {
		s.metrics.corrupt.Inc()
		if err := os.Truncate(sg.path, sg.size); err != nil {
			return fmt.Errorf("cutting the corrupt tail of %s: %w", sg.path, err)
		}
	}
	return nil
}

// readRecords reads records until EOF or the first corrupt one (then sets
// *corrupt). each gets the payload, done the record's size on disk.
func readRecords(r io.Reader, each func([]byte) error, done func(int64), corrupt *bool) error {
	var hdr [recordHeader]byte
	buf := make([]byte, 0, 1024)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				*corrupt = true
				return nil
			}
			if err == io.EOF {
				return nil
			}
			return err
		}
		n := binary.BigEndian.Uint32(hdr[0:4])
		if n == 0 || n > usagestore.MaxRecordSize {
			*corrupt = true
			return nil
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				*corrupt = true
				return nil
			}
			return err
		}
		if crc32.Checksum(buf, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
			*corrupt = true
			return nil
		}
		if err := each(buf); err != nil {
			return err
		}
		done(int64(recordHeader + n))
	}
}

// append writes events, in one write and one fsync, and returns how many
// it wrote: fewer than asked when the spool is full (errSpoolFull) or on a
// write error.
func (s *spool) append(events []*usagestore.Event) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.activeSg == nil || s.activeSg.size >= s.segmentSize {
		if err := s.rotate(); err != nil {
			return 0, err
		}
	}
	var buf []byte
	written := 0
	var full error
	for _, e := range events {
		start := len(buf)
		buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0) // header, filled below
		buf = e.AppendCloudEvent(buf)
		n := len(buf) - start - recordHeader
		if s.total+int64(len(buf)) > s.maxBytes {
			buf = buf[:start]
			full = errSpoolFull
			break
		}
		binary.BigEndian.PutUint32(buf[start:], uint32(n))
		binary.BigEndian.PutUint32(buf[start+4:], crc32.Checksum(buf[start+recordHeader:], castagnoli))
		written++
	}
	if written == 0 {
		return 0, full
	}
	if _, err := s.active.Write(buf); err != nil {
		// Cut back to the last good size so the segment stays readable.
		_ = s.active.Truncate(s.activeSg.size)
		return 0, fmt.Errorf("writing the usage spool: %w", err)
	}
	if err := s.active.Sync(); err != nil {
		return 0, fmt.Errorf("syncing the usage spool: %w", err)
	}
	s.activeSg.size += int64(len(buf))
	s.activeSg.records += int64(written)
	s.total += int64(len(buf))
	s.count += int64(written)
	return written, full
}

// rotate closes the active segment (keeping it for replay if it has
// records) and opens a new one. Callers hold mu.
func (s *spool) rotate() error {
	if s.active != nil {
		_ = s.active.Close()
		if s.activeSg.records > 0 {
			s.closed = append(s.closed, s.activeSg)
		} else {
			_ = os.Remove(s.activeSg.path)
		}
		s.active, s.activeSg = nil, nil
	}
	sg := &segment{seq: s.nextSeq, path: filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segmentPrefix, s.nextSeq, segmentSuffix))}
	f, err := os.OpenFile(sg.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("creating a usage spool segment: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync() // make the new file's name durable
		_ = d.Close()
	}
	s.nextSeq++
	s.active, s.activeSg = f, sg
	return nil
}

// oldest returns the oldest segment with records, closing the active one
// first when it is the only one.
func (s *spool) oldest() (*segment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.closed) == 0 && s.activeSg != nil && s.activeSg.records > 0 {
		_ = s.active.Close()
		s.closed = append(s.closed, s.activeSg)
		s.active, s.activeSg = nil, nil
	}
	if len(s.closed) == 0 {
		return nil, false
	}
	return s.closed[0], true
}

// read decodes a closed segment's events, in order. Records that are not
// events (which the spool never writes) are counted as corrupt and skipped.
func (s *spool) read(sg *segment) ([]*usagestore.Event, error) {
	f, err := os.Open(sg.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	events := make([]*usagestore.Event, 0, sg.records)
	var corrupt bool
	err = readRecords(bufio.NewReader(io.LimitReader(f, sg.size)), func(b []byte) error {
		e, err := usagestore.ParseCloudEvent(b)
		if err != nil {
			s.metrics.corrupt.Inc()
			return nil
		}
		events = append(events, &e)
		return nil
	}, func(int64) {}, &corrupt)
	if corrupt {
		s.metrics.corrupt.Inc()
	}
	return events, err
}

// remove deletes a replayed segment.
func (s *spool) remove(sg *segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.closed) == 0 || s.closed[0] != sg {
		return errors.New("usage spool: removing a segment that is not the oldest")
	}
	if err := os.Remove(sg.path); err != nil && !os.IsNotExist(err) {
		return err
	}
	s.closed = s.closed[1:]
	s.total -= sg.size
	s.count -= sg.records
	return nil
}

// setMax changes the spool's bound (a reload's spool_size).
func (s *spool) setMax(n int64) {
	s.mu.Lock()
	s.maxBytes = n
	s.mu.Unlock()
}

// size is the spool's size in bytes; records its number of events.
func (s *spool) size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func (s *spool) records() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// close closes the active segment and releases the directory lock.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != nil {
		_ = s.active.Close()
		if s.activeSg.records == 0 {
			_ = os.Remove(s.activeSg.path)
		}
		s.active, s.activeSg = nil, nil
	}
	return unlockDir(s.lock)
}
