package caddyauth

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tenantgate/tenantgate/keystore"
)

// orgCommand is `caddy tenant org …`.
func orgCommand() *cobra.Command {
	org := &cobra.Command{Use: "org", Short: "Creates, lists, disables and enables organizations"}

	create := &cobra.Command{
		Use:   "create --name N [--plan P] [--per-minute N --per-day N --burst N] [--json]",
		Short: "Creates an organization",
		Args:  cobra.NoArgs,
		RunE:  runOrgCreate,
	}
	create.Flags().String("name", "", "organization name (required)")
	create.Flags().String("plan", "basic", "plan tier")
	create.Flags().Int64("per-minute", 0, "override the plan's requests per minute")
	create.Flags().Int64("per-day", 0, "override the plan's requests per day")
	create.Flags().Int64("burst", 0, "override the plan's burst")
	create.Flags().Bool("json", false, "print JSON")

	list := &cobra.Command{Use: "list [--json]", Short: "Lists organizations", Args: cobra.NoArgs, RunE: runOrgList}
	list.Flags().Bool("json", false, "print JSON")

	disable := &cobra.Command{
		Use:   "disable ID [--json]",
		Short: "Disables an organization: all its keys get 403 at once",
		Args:  cobra.ExactArgs(1),
		RunE:  runOrgDisable,
	}
	disable.Flags().Bool("json", false, "print JSON")

	enable := &cobra.Command{
		Use:   "enable ID [--json]",
		Short: "Enables a disabled organization: its valid keys work again at once",
		Args:  cobra.ExactArgs(1),
		RunE:  runOrgEnable,
	}
	enable.Flags().Bool("json", false, "print JSON")

	org.AddCommand(create, list, disable, enable)
	return org
}

func runOrgCreate(cmd *cobra.Command, _ []string) error {
	in := keystore.OrgInput{}
	name, _ := cmd.Flags().GetString("name")
	var err error
	if in.Name, err = cleanName("organization", name); err != nil {
		return err
	}
	ps, err := plans(cmd)
	if err != nil {
		return err
	}
	in.Plan, _ = cmd.Flags().GetString("plan")
	if err := ps.check(in.Plan); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		into **int64
		min  int64
	}{{"per-minute", &in.PerMinute, 1}, {"per-day", &in.PerDay, 1}, {"burst", &in.Burst, 0}} {
		if !cmd.Flags().Changed(f.name) {
			continue
		}
		v, _ := cmd.Flags().GetInt64(f.name)
		if v < f.min {
			return fmt.Errorf("--%s must be at least %d, got %d", f.name, f.min, v)
		}
		*f.into = &v
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		o, err := admin.CreateOrg(ctx, in)
		if err != nil {
			return err
		}
		return printOrg(cmd, o, "created organization")
	})
}

func runOrgList(cmd *cobra.Command, _ []string) error {
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		orgs, err := allPages(func(cursor string) ([]keystore.Organization, string, error) {
			return admin.ListOrgs(ctx, cursor, keystore.MaxPageSize)
		})
		if err != nil {
			return err
		}
		if jsonFlag(cmd) {
			return printJSON(cmd.OutOrStdout(), orgs)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPLAN\tLIMITS\tCREATED\tDISABLED")
		for _, o := range orgs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.Name, o.Plan, limitsText(o),
				formatTime(&o.CreatedAt, ""), formatTime(o.Disabled, "-"))
		}
		return tw.Flush()
	})
}

func runOrgDisable(cmd *cobra.Command, args []string) error {
	id, err := parseID("organization ID", args[0])
	if err != nil {
		return err
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		o, err := admin.DisableOrg(ctx, id)
		if err != nil {
			return err
		}
		return printOrg(cmd, o, "disabled organization")
	})
}

func runOrgEnable(cmd *cobra.Command, args []string) error {
	id, err := parseID("organization ID", args[0])
	if err != nil {
		return err
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		o, err := admin.EnableOrg(ctx, id)
		if err != nil {
			return err
		}
		return printOrg(cmd, o, "enabled organization")
	})
}

func printOrg(cmd *cobra.Command, o keystore.Organization, what string) error {
	if jsonFlag(cmd) {
		return printJSON(cmd.OutOrStdout(), o)
	}
	_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n  name:     %s\n  plan:     %s\n  limits:   %s\n  created:  %s\n  disabled: %s\n",
		what, o.ID, o.Name, o.Plan, limitsText(o), formatTime(&o.CreatedAt, ""), formatTime(o.Disabled, "no"))
	return err
}

// limitsText shows an organization's limit overrides.
func limitsText(o keystore.Organization) string {
	var parts []string
	for _, l := range []struct {
		name string
		v    *int64
	}{{"per-minute", o.PerMinute}, {"per-day", o.PerDay}, {"burst", o.Burst}} {
		if l.v != nil {
			parts = append(parts, fmt.Sprintf("%s=%d", l.name, *l.v))
		}
	}
	if len(parts) == 0 {
		return "plan defaults"
	}
	return strings.Join(parts, " ")
}
