package caddyauth

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tenantgate/tenantgate/keystore"
)

// keyCommand is `caddy tenant key …`.
func keyCommand() *cobra.Command {
	key := &cobra.Command{Use: "key", Short: "Creates, lists, revokes and rotates API keys"}

	create := &cobra.Command{
		Use:   "create --org-id ID --name N [--plan P] [--expires-in DUR] [--test] [--json]",
		Short: "Creates an API key and prints it once",
		Args:  cobra.NoArgs,
		RunE:  runKeyCreate,
	}
	create.Flags().String("org-id", "", "organization ID (required)")
	create.Flags().String("name", "", "key name, e.g. the client it is for (required)")
	create.Flags().String("plan", "", "plan for this key (default: the organization's)")
	create.Flags().String("expires-in", "", "expire the key after this long, e.g. 720h or 90d (default: never)")
	create.Flags().Bool("test", false, "create an sk_test_ key instead of sk_live_")
	create.Flags().Bool("json", false, "print JSON")

	list := &cobra.Command{
		Use:   "list --org-id ID [--json]",
		Short: "Lists an organization's keys (never the keys themselves)",
		Args:  cobra.NoArgs,
		RunE:  runKeyList,
	}
	list.Flags().String("org-id", "", "organization ID (required)")
	list.Flags().Bool("json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke ID [--json]",
		Short: "Revokes a key: gateways answer 403 for it at once",
		Args:  cobra.ExactArgs(1),
		RunE:  runKeyRevoke,
	}
	revoke.Flags().Bool("json", false, "print JSON")

	rotate := &cobra.Command{
		Use:   "rotate ID [--grace DUR] [--expires-in DUR] [--json]",
		Short: "Creates a replacement key; the old one expires after the grace period",
		Args:  cobra.ExactArgs(1),
		RunE:  runKeyRotate,
	}
	rotate.Flags().String("grace", keystore.DefaultRotateGrace.String(), "how long the old key keeps working; 0 ends it now")
	rotate.Flags().String("expires-in", "", "expire the new key after this long (default: when the old key was due to)")
	rotate.Flags().Bool("json", false, "print JSON")

	key.AddCommand(create, list, revoke, rotate)
	return key
}

func runKeyCreate(cmd *cobra.Command, _ []string) error {
	orgID, err := orgIDFlag(cmd)
	if err != nil {
		return err
	}
	in := keystore.KeyInput{OrgID: orgID}
	name, _ := cmd.Flags().GetString("name")
	if in.Name, err = cleanName("key", name); err != nil {
		return err
	}
	if cmd.Flags().Changed("plan") {
		ps, err := plans(cmd)
		if err != nil {
			return err
		}
		plan, _ := cmd.Flags().GetString("plan")
		if err := ps.check(plan); err != nil {
			return err
		}
		in.Plan = &plan
	}
	if in.ExpiresIn, err = durationFlag(cmd, "expires-in", false); err != nil {
		return err
	}
	in.Test, _ = cmd.Flags().GetBool("test")
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		k, err := admin.CreateKey(ctx, in)
		if err != nil {
			return err
		}
		if jsonFlag(cmd) {
			return printJSON(cmd.OutOrStdout(), k)
		}
		return printNewKey(cmd.OutOrStdout(), k)
	})
}

func runKeyList(cmd *cobra.Command, _ []string) error {
	orgID, err := orgIDFlag(cmd)
	if err != nil {
		return err
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		keys, err := allPages(func(cursor string) ([]keystore.APIKey, string, error) {
			return admin.ListKeys(ctx, orgID, cursor, keystore.MaxPageSize)
		})
		if err != nil {
			return err
		}
		if jsonFlag(cmd) {
			return printJSON(cmd.OutOrStdout(), keys)
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tPREFIX\tPLAN\tSTATUS\tCREATED\tEXPIRES\tLAST USED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s…\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Prefix, keyPlanText(k),
				k.Status, formatTime(&k.Created, ""), formatTime(k.Expires, "never"), formatTime(k.LastUsed, "-"))
		}
		return tw.Flush()
	})
}

func runKeyRevoke(cmd *cobra.Command, args []string) error {
	id, err := parseID("key ID", args[0])
	if err != nil {
		return err
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		k, err := admin.RevokeKey(ctx, id)
		if err != nil {
			return err
		}
		if jsonFlag(cmd) {
			return printJSON(cmd.OutOrStdout(), k)
		}
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked key %s (%s…, %q) at %s\n", k.ID, k.Prefix, k.Name, formatTime(k.Revoked, ""))
		return err
	})
}

func runKeyRotate(cmd *cobra.Command, args []string) error {
	id, err := parseID("key ID", args[0])
	if err != nil {
		return err
	}
	grace, err := durationFlag(cmd, "grace", true)
	if err != nil {
		return err
	}
	expiresIn, err := durationFlag(cmd, "expires-in", false)
	if err != nil {
		return err
	}
	return withDB(cmd, func(ctx context.Context, admin *keystore.Admin) error {
		rot, err := admin.RotateKey(ctx, id, keystore.RotateOptions{Grace: grace, ExpiresIn: expiresIn})
		if err != nil {
			return err
		}
		if jsonFlag(cmd) {
			return printJSON(cmd.OutOrStdout(), rot)
		}
		if err := printNewKey(cmd.OutOrStdout(), rot.NewAPIKey); err != nil {
			return err
		}
		old := rot.Replaces
		_, err = fmt.Fprintf(cmd.OutOrStdout(), "  replaces:     %s (%s…), which expires at %s\n", old.ID, old.Prefix, formatTime(old.Expires, ""))
		return err
	})
}

func printNewKey(w io.Writer, k keystore.NewAPIKey) error {
	_, err := fmt.Fprintf(w, "API key created. It is shown only now: store it safely.\n\n  %s\n\n  id:           %s\n  prefix:       %s\n  name:         %s\n  organization: %s\n  plan:         %s\n  expires:      %s\n",
		k.Key, k.ID, k.Prefix, k.Name, k.OrgID, keyPlanText(k.APIKey), formatTime(k.Expires, "never"))
	return err
}

func keyPlanText(k keystore.APIKey) string {
	if k.Plan == nil {
		return "(organization's)"
	}
	return *k.Plan
}
