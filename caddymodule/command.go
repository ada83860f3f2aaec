package caddymodule

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mcp-auth",
		Usage: "user|client|agent|key|tools <subcommand> | backup <file> [--address <admin address>] | migrate-storage --from <bolt file> --to <dsn>",
		Short: "Manages mcp_auth users, clients, agents, signing keys and pinned tools of a running Caddy, and backs up its store",
		Long: `
Manages the users, OAuth clients, agents and signing keys of the mcp_auth app of a
running Caddy instance, through its admin API (routes under /mcp-auth/).

  user add <name> [--group <g>]... [--name <n>] [--email <e>]
  user list | show <name> | remove <name> | set-password <name>
       | disable <name> | enable <name>
  client add <id> [--public] [--redirect-uri <uri>]... [--grant-type <t>]...
                  [--auth-method <m>] [--jwks-uri <url>] [--jwks <file>]
                  [--resource <url>]... [--scope <s>]... [--name <n>] [--introspect]
  client update <id> [the flags of add: those given replace what the client has]
  client list | show <id> | remove <id> | rotate-secret <id>
  agent add <id> [--name <n>] [--jwks-uri <url>] [--jwks <file>]
                 [--allowed-client <id>]... [--scope <s>]... [--max-depth <n>]
  agent list | show <id> | remove <id> | disable <id> | enable <id>
        | rotate-secret <id>
  key rotate [--withdraw] [--withdraw-kid <kid>]
  tools list [<resource>] | diff <resource> <tool>
        | approve <resource> <tool> [--hash <h>] | reject <resource> <tool> [--hash <h>]
        | forget <resource> <tool> [--hash <h>]
  backup <file>
  migrate-storage --from <bolt file> --to <dsn>

Passwords are read from the terminal (or one line of stdin), must have at
least 8 characters, and are hashed with bcrypt here; only the hash is sent. A confidential client's secret is
printed once, when it is created or rotated; so is an agent's.

backup copies the store (bolt storage) while Caddy runs, consistently, to
<file> (mode 0600; written to a temporary file, checked, then renamed; an
existing <file> must be a regular file, not a symbolic link). To restore:
stop Caddy, copy the file to the storage path, start Caddy.

migrate-storage copies a bolt store into an empty PostgreSQL database, for
moving to "storage postgres": stop Caddy first (the bolt file is locked
while it runs). The copy is one transaction: all entries or none; it
refuses a database that already holds any of them. --to may be a
placeholder ({env.NAME}, {file.PATH}); a password is better given through
PGPASSWORD or a .pgpass file than on the command line.

The admin address is --address, else the one in --config, else
localhost:2019. Users, clients and agents declared in the Caddyfile are
listed but cannot be changed here.
`,
		CobraFunc: func(cmd *cobra.Command) { buildCommand(cmd, os.Stdin, os.Stdout, os.Stderr) },
	})
}

// cli holds what the subcommands share.
type cli struct {
	in       io.Reader
	out, msg io.Writer
	hashCost int // bcrypt cost; 0: bcrypt.DefaultCost
	address  string
	config   string
	adapter  string
}

func buildCommand(cmd *cobra.Command, in io.Reader, out, msg io.Writer) {
	newCLI(cmd, &cli{in: in, out: out, msg: msg})
}

func newCLI(cmd *cobra.Command, c *cli) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&c.address, "address", "", "Admin API address of the running Caddy (default localhost:2019)")
	pf.StringVarP(&c.config, "config", "c", "", "Configuration file to read the admin address from")
	pf.StringVarP(&c.adapter, "adapter", "a", "", "Name of the config adapter for --config")

	// Commands that only group subcommands refuse unknown or missing
	// subcommands with an error (cobra would print help and succeed).
	group(cmd)
	user := group(&cobra.Command{Use: "user", Short: "Manages users"})
	user.AddCommand(c.userAdd(), c.userList(), c.userShow(), c.userRemove(), c.userSetPassword(),
		c.userAction("disable", "Disables a user, of an identity provider too, ending its sessions and grants", http.MethodPost, "/disable", "disabled user %s\n"),
		c.userAction("enable", "Enables a disabled user", http.MethodPost, "/enable", "enabled user %s\n"))
	client := group(&cobra.Command{Use: "client", Short: "Manages OAuth clients"})
	client.AddCommand(c.clientAdd(), c.clientUpdate(), c.clientList(), c.clientShow(), c.clientRemove(), c.clientRotate())
	agent := group(&cobra.Command{Use: "agent", Short: "Manages AI agent principals"})
	agent.AddCommand(c.agentAdd(), c.agentList(),
		c.agentAction("show", "Shows an agent", http.MethodGet, "", ""),
		c.agentAction("remove", "Removes an agent and revokes every grant it holds or acts in", http.MethodDelete, "", "removed agent %s\n"),
		c.agentAction("disable", "Disables an agent and revokes its grants", http.MethodPost, "/disable", "disabled agent %s\n"),
		c.agentAction("enable", "Enables a disabled agent", http.MethodPost, "/enable", "enabled agent %s\n"),
		c.agentAction("rotate-secret", "Replaces an agent's secret and prints the new one once", http.MethodPost, "/secret", ""))
	key := group(&cobra.Command{Use: "key", Short: "Manages signing keys"})
	key.AddCommand(c.keyRotate())
	cmd.AddCommand(user, client, agent, key, c.backup(), c.migrateStorage(), c.tools())
}

// group makes cmd, which only holds subcommands, fail when run without
// one or with an unknown one.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("unknown command %q for %q; want one of: %s", args[0], cmd.CommandPath(), subcommands(cmd))
		}
		return nil
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return fmt.Errorf("%s: missing subcommand; want one of: %s", cmd.CommandPath(), subcommands(cmd))
	}
	return cmd
}

func subcommands(cmd *cobra.Command) string {
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	return strings.Join(names, ", ")
}

func (c *cli) userAdd() *cobra.Command {
	var nu issuer.NewUserRequest
	cmd := &cobra.Command{
		Use:   "add <name>",
		Short: "Adds a user (asks for the password)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nu.Username = args[0]
			hash, err := c.readPasswordHash()
			if err != nil {
				return err
			}
			nu.PasswordHash = hash
			var v issuer.UserView
			if err := c.call(http.MethodPost, "/mcp-auth/users", nu, &v); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "added user %s\n", v.Username)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&nu.Groups, "group", nil, "Group to add the user to (repeatable)")
	f.StringVar(&nu.Name, "name", "", "Display name")
	f.StringVar(&nu.Email, "email", "", "Email address")
	return cmd
}

func (c *cli) userList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Lists users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var users []issuer.UserView
			if err := c.call(http.MethodGet, "/mcp-auth/users", nil, &users); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USERNAME\tGROUPS\tSOURCE\tDISABLED")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", printable(u.Username), printable(strings.Join(u.Groups, ",")), u.Source, u.Disabled)
			}
			return tw.Flush()
		},
	}
}

func (c *cli) userShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <name>",
		Short: "Shows a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v issuer.UserView
			if err := c.call(http.MethodGet, "/mcp-auth/users/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			return c.print(v)
		},
	}
}

func (c *cli) userRemove() *cobra.Command {
	return c.userAction("remove", "Removes a user (one of an identity provider is created again at its next sign-in there: disable it to keep it out)", http.MethodDelete, "", "removed user %s\n")
}

// userAction is a command that acts on one user and prints done.
func (c *cli) userAction(use, short, method, suffix, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " <name>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.call(method, "/mcp-auth/users/"+url.PathEscape(args[0])+suffix, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.out, done, args[0])
			return nil
		},
	}
}

func (c *cli) userSetPassword() *cobra.Command {
	return &cobra.Command{
		Use:   "set-password <name>",
		Short: "Sets a user's password (asks for it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			hash, err := c.readPasswordHash()
			if err != nil {
				return err
			}
			body := issuer.PasswordRequest{PasswordHash: hash}
			if err := c.call(http.MethodPut, "/mcp-auth/users/"+url.PathEscape(args[0])+"/password", body, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "password of %s changed\n", args[0])
			return nil
		},
	}
}

func (c *cli) clientAdd() *cobra.Command {
	var nc issuer.NewClientRequest
	var jwksFile string
	cmd := &cobra.Command{
		Use:   "add <client_id>",
		Short: "Adds an OAuth client (prints a generated secret once for confidential clients)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc.ID = args[0]
			if err := emptyListFlag(cmd.Flags(), "scope", "grant-type"); err != nil {
				return err
			}
			if jwksFile != "" {
				b, err := readJWKS(jwksFile)
				if err != nil {
					return err
				}
				nc.JWKS = b
			}
			var v issuer.ClientView
			if err := c.call(http.MethodPost, "/mcp-auth/clients", nc, &v); err != nil {
				return err
			}
			if v.ClientSecret != "" {
				fmt.Fprintln(c.msg, "Store the client secret now: it is not shown again.")
			}
			return c.print(v)
		},
	}
	clientFlags(cmd, &nc, &jwksFile)
	return cmd
}

// clientFlags are the flags of client add and client update.
func clientFlags(cmd *cobra.Command, nc *issuer.NewClientRequest, jwksFile *string) {
	f := cmd.Flags()
	f.StringVar(&nc.Name, "name", "", "Display name shown on the consent page")
	f.BoolVar(&nc.Public, "public", false, "Public client (no secret; PKCE only)")
	// URIs and client ids (a client ID metadata document's is a URL) may
	// hold a comma: one flag is one value, where a slice flag would split.
	f.StringArrayVar(&nc.RedirectURIs, "redirect-uri", nil, "Redirect URI (repeatable)")
	f.StringArrayVar(&nc.PostLogoutRedirectURIs, "post-logout-redirect-uri", nil, "Where RP-Initiated Logout may send the browser back to (repeatable)")
	f.StringSliceVar(&nc.GrantTypes, "grant-type", nil, "Grant type (repeatable; default authorization_code, refresh_token)")
	f.StringVar(&nc.AuthMethod, "auth-method", "", "Token endpoint auth method: none, client_secret_basic, client_secret_post, private_key_jwt")
	f.StringVar(&nc.JWKSURI, "jwks-uri", "", "URL of the client's JWK Set (private_key_jwt)")
	f.StringVar(jwksFile, "jwks", "", "File holding the client's JWK Set (private_key_jwt)")
	f.StringArrayVar(&nc.Resources, "resource", nil, "Resource the client may use (repeatable; default all)")
	f.StringSliceVar(&nc.Scopes, "scope", nil, "Scope the client may hold (repeatable; default all)")
	f.BoolVar(&nc.Introspect, "introspect", false, "Resource server: may introspect every token, not only its own")
	f.BoolVar(&nc.DPoPBound, "dpop-bound-access-tokens", false, "Refuse the client's token requests without a DPoP proof (RFC 9449)")
	f.BoolVar(&nc.RequirePAR, "require-par", false, "Refuse the client's authorization requests unless pushed first (PAR, RFC 9126)")
	f.StringVar(&nc.IDTokenAlg, "id-token-alg", "", "Algorithm of the client's ID tokens: RS256 (default) or the issuer's signing_alg")
	f.StringVar(&nc.AuthSigningAlg, "auth-signing-alg", "", "The one algorithm of the client's private_key_jwt assertions (default: any offered)")
}

// emptyListFlag refuses a comma-separated list flag given with no entry
// (--scope "", which pflag reads as none): the list would be left out of
// the request, no restriction, so written to allow nothing it would allow
// every scope, and on client update it would lift the client's
// restriction; --grant-type "" would give the default grant types,
// authorization_code and refresh_token. The admin API refuses [] for the
// same reason. (The repeatable one-value flags read "" as one entry,
// which allows nothing.)
func emptyListFlag(f *pflag.FlagSet, names ...string) error {
	for _, name := range names {
		fl := f.Lookup(name)
		if s, ok := fl.Value.(pflag.SliceValue); ok && fl.Changed && len(s.GetSlice()) == 0 {
			means := "no restriction"
			if name == "grant-type" {
				means = "the default grant types, authorization_code and refresh_token"
			}
			return fmt.Errorf(`--%s "": give at least one value, or leave --%s out (empty, it would mean %s)`, name, name, means)
		}
	}
	return nil
}

// clientUpdate changes a client added through the admin API: the flags
// given replace what the client has (a repeatable flag, the whole list),
// the rest stays as the admin API shows it, and the registration is sent
// whole (PUT). The secret stays; grants are revoked as the route says.
func (c *cli) clientUpdate() *cobra.Command {
	var set issuer.NewClientRequest
	var jwksFile string
	cmd := &cobra.Command{
		Use:   "update <client_id>",
		Short: "Changes an OAuth client's registration (the flags given; the secret stays)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := emptyListFlag(cmd.Flags(), "scope", "grant-type"); err != nil {
				return err
			}
			uri := "/mcp-auth/clients/" + url.PathEscape(id)
			var cur issuer.ClientView
			read, err := c.callWith(http.MethodGet, uri, nil, nil, &cur)
			if err != nil {
				return err
			}
			nc := issuer.NewClientRequest{
				ID: id, Name: cur.Name, RedirectURIs: cur.RedirectURIs, PostLogoutRedirectURIs: cur.PostLogoutRedirectURIs, GrantTypes: cur.GrantTypes,
				AuthMethod: cur.AuthMethod, JWKSURI: cur.JWKSURI, Resources: cur.Resources, Scopes: cur.Scopes,
				Introspect: cur.Introspect, DPoPBound: cur.DPoPBound, RequirePAR: cur.RequirePAR, IDTokenAlg: cur.IDTokenAlg,
				AuthSigningAlg: cur.AuthSigningAlg,
			}
			f := cmd.Flags()
			if f.Changed("name") {
				nc.Name = set.Name
			}
			if f.Changed("redirect-uri") {
				nc.RedirectURIs = set.RedirectURIs
			}
			if f.Changed("post-logout-redirect-uri") {
				nc.PostLogoutRedirectURIs = set.PostLogoutRedirectURIs
			}
			if f.Changed("grant-type") {
				nc.GrantTypes = set.GrantTypes
			}
			if f.Changed("resource") {
				nc.Resources = set.Resources
			}
			if f.Changed("scope") {
				nc.Scopes = set.Scopes
			}
			if f.Changed("introspect") {
				nc.Introspect = set.Introspect
			}
			if f.Changed("dpop-bound-access-tokens") {
				nc.DPoPBound = set.DPoPBound
			}
			if f.Changed("require-par") {
				nc.RequirePAR = set.RequirePAR
			}
			if f.Changed("id-token-alg") {
				nc.IDTokenAlg = set.IDTokenAlg
			}
			if f.Changed("auth-signing-alg") {
				nc.AuthSigningAlg = set.AuthSigningAlg
			}
			switch {
			case f.Changed("auth-method"):
				nc.AuthMethod = set.AuthMethod
			case f.Changed("public") && set.Public:
				nc.AuthMethod = "none"
			case f.Changed("public"):
				nc.AuthMethod = "" // confidential: the route's default
			}
			keys := f.Changed("jwks") || f.Changed("jwks-uri")
			switch {
			case keys:
				nc.JWKSURI = set.JWKSURI
				if jwksFile != "" {
					b, err := readJWKS(jwksFile)
					if err != nil {
						return err
					}
					nc.JWKS = b
				}
			case nc.AuthMethod == "none":
				nc.JWKSURI = "" // a public client has no keys
			case cur.HasJWKS:
				// A secret client's keys too: dropped, they would change
				// its credentials, and the update revoke its grants.
				return fmt.Errorf("client %s has a JWK Set, which the admin API does not show: give it again with --jwks <file> (or --jwks-uri)", id)
			}
			if keys && !f.Changed("auth-method") {
				nc.AuthMethod = "private_key_jwt"
			}
			// Only over the registration read above: a change someone
			// made since is not undone unseen (412).
			var hdr http.Header
			if tag := read.Get("ETag"); tag != "" {
				hdr = http.Header{"If-Match": {tag}}
			}
			var v issuer.ClientView
			if _, err := c.callWith(http.MethodPut, uri, hdr, nc, &v); err != nil {
				return err
			}
			return c.print(v)
		},
	}
	clientFlags(cmd, &set, &jwksFile)
	return cmd
}

func (c *cli) clientList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Lists OAuth clients",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var clients []issuer.ClientView
			if err := c.call(http.MethodGet, "/mcp-auth/clients", nil, &clients); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CLIENT_ID\tNAME\tAUTH_METHOD\tSOURCE")
			for _, v := range clients {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", printable(v.ID), printable(v.Name), v.AuthMethod, v.Source)
			}
			return tw.Flush()
		},
	}
}

func (c *cli) clientShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show <client_id>",
		Short: "Shows an OAuth client",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v issuer.ClientView
			if err := c.call(http.MethodGet, "/mcp-auth/clients/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			return c.print(v)
		},
	}
}

func (c *cli) clientRemove() *cobra.Command {
	return &cobra.Command{
		Use:   "remove <client_id>",
		Short: "Removes an OAuth client",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.call(http.MethodDelete, "/mcp-auth/clients/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "removed client %s\n", args[0])
			return nil
		},
	}
}

func (c *cli) clientRotate() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate-secret <client_id>",
		Short: "Replaces a confidential client's secret and prints the new one once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res map[string]string
			if err := c.call(http.MethodPost, "/mcp-auth/clients/"+url.PathEscape(args[0])+"/secret", nil, &res); err != nil {
				return err
			}
			fmt.Fprintln(c.msg, "Store the client secret now: it is not shown again.")
			return c.print(res)
		},
	}
}

func (c *cli) agentAdd() *cobra.Command {
	var na issuer.NewAgentRequest
	var jwksFile string
	cmd := &cobra.Command{
		Use:   "add <agent_id>",
		Short: "Adds an agent (prints a generated secret once unless it has keys)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			na.ID = args[0]
			if err := emptyListFlag(cmd.Flags(), "scope"); err != nil {
				return err
			}
			if cmd.Flags().Changed("max-depth") && na.MaxDepth == 0 {
				// Sent as 0 it would be left out, the issuer's limit: written
				// to allow no delegation, it would allow the most (the API
				// refuses it too).
				return fmt.Errorf("--max-depth 0: want at least 1 (left out, the issuer's limit, %d)", issuer.MaxDelegationDepth)
			}
			if jwksFile != "" {
				b, err := readJWKS(jwksFile)
				if err != nil {
					return err
				}
				na.JWKS = b
			}
			var v issuer.AgentView
			if err := c.call(http.MethodPost, "/mcp-auth/agents", na, &v); err != nil {
				return err
			}
			if v.Secret != "" {
				fmt.Fprintln(c.msg, "Store the agent secret now: it is not shown again.")
			}
			return c.print(v)
		},
	}
	f := cmd.Flags()
	f.StringVar(&na.Name, "name", "", "Display name shown on consent pages")
	f.StringVar(&na.JWKSURI, "jwks-uri", "", "URL of the agent's JWK Set (private_key_jwt)")
	f.StringVar(&jwksFile, "jwks", "", "File holding the agent's JWK Set (private_key_jwt)")
	f.StringArrayVar(&na.AllowedClients, "allowed-client", nil, "Client whose users may delegate to the agent (repeatable; default any)")
	f.StringSliceVar(&na.Scopes, "scope", nil, "Scope the agent may ever hold (repeatable; default any)")
	f.IntVar(&na.MaxDepth, "max-depth", 0, "Longest act chain the agent may head, at least 1 (default the issuer's limit)")
	return cmd
}

func (c *cli) agentList() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Lists agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var agents []issuer.AgentView
			if err := c.call(http.MethodGet, "/mcp-auth/agents", nil, &agents); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AGENT_ID\tNAME\tSOURCE\tDISABLED")
			for _, v := range agents {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", printable(v.ID), printable(v.Name), v.Source, v.Disabled)
			}
			return tw.Flush()
		},
	}
}

// agentAction is a subcommand acting on one agent: it prints the answer as
// JSON, or done (with the id) when the answer has no body.
func (c *cli) agentAction(use, short, method, suffix, done string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " <agent_id>",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			uri := "/mcp-auth/agents/" + url.PathEscape(args[0]) + suffix
			if done != "" {
				if err := c.call(method, uri, nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(c.out, done, args[0])
				return nil
			}
			var res map[string]any
			if err := c.call(method, uri, nil, &res); err != nil {
				return err
			}
			if _, ok := res["secret"]; ok {
				fmt.Fprintln(c.msg, "Store the agent secret now: it is not shown again.")
			}
			return c.print(res)
		},
	}
}

// call sends one admin API request and decodes the JSON answer into res
// (when not nil).
func (c *cli) call(method, uri string, body, res any) error {
	_, err := c.callWith(method, uri, nil, body, res)
	return err
}

// callWith is call with request header fields hdr, returning the
// answer's header.
func (c *cli) callWith(method, uri string, hdr http.Header, body, res any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	resp, err := c.requestWith(method, uri, hdr, rd)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if res == nil {
		return resp.Header, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(res); err != nil {
		return nil, fmt.Errorf("reading answer: %w", err)
	}
	return resp.Header, nil
}

// request sends one admin API request; an error status is an error.
func (c *cli) request(method, uri string, body io.Reader) (*http.Response, error) {
	return c.requestWith(method, uri, nil, body)
}

// errNoCaddy: nothing answered at the admin address.
var errNoCaddy = errors.New("no Caddy admin endpoint")

// requestWith is request with request header fields hdr.
func (c *cli) requestWith(method, uri string, hdr http.Header, body io.Reader) (*http.Response, error) {
	addr, err := adminAddress(c.address)
	if err != nil {
		return nil, err
	}
	addr, err = caddycmd.DetermineAdminAPIAddress(addr, nil, c.config, c.adapter)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, hdr, body)
	// Caddy formats the transport's error (%v), so a refused dial is known
	// only by its prefix: no answer at all, as opposed to an error status.
	if err != nil && strings.HasPrefix(err.Error(), "performing request: ") {
		return nil, fmt.Errorf("%w at %s: is Caddy running? Name its admin address with --address, or its config with --config (%w)", errNoCaddy, addr, err)
	}
	return resp, err
}

// backup writes a copy of the running store to file: into a temporary
// file beside it (mode 0600: it holds every secret hash and session of
// the store), checked, then renamed over file, so that file is never a
// partial copy.
func (c *cli) backup() *cobra.Command {
	return &cobra.Command{
		Use:   "backup <file>",
		Short: "Writes a consistent copy of the running store (bolt storage) to file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := args[0]
			if err := backupTarget(file); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			resp, err := c.request(http.MethodGet, "/mcp-auth/backup", nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*.tmp")
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			defer os.Remove(tmp.Name()) // after the rename, nothing to remove
			// Stopped by a signal, the copy ends in an error, so that the
			// temporary file, part of every secret hash and signing key,
			// is removed rather than left behind by the default exit: a
			// hang-up too (the SSH session it ran in dropped).
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			copied := make(chan struct{})
			defer func() { signal.Stop(sig); close(copied) }()
			go func() {
				select {
				case <-sig:
					resp.Body.Close()
				case <-copied:
				}
			}()
			n, err := io.Copy(tmp, resp.Body)
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("backup: writing %s: %w", tmp.Name(), err)
			}
			if err := bolt.Check(tmp.Name()); err != nil {
				return fmt.Errorf("backup: the copy received is not a sound database, %s left unchanged: %w", file, err)
			}
			if err := os.Rename(tmp.Name(), file); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			// The rename is the directory's to keep: "backed up" is said
			// once it is on disk too, not only the file's bytes.
			if err := bolt.SyncDir(filepath.Dir(file)); err != nil {
				return fmt.Errorf("backup: %s renamed but not synced: %w", file, err)
			}
			fmt.Fprintf(c.out, "backed up %d bytes to %s\n", n, file)
			return nil
		},
	}
}

// backupTarget refuses a backup target that exists and is not a regular
// file, then one a process holds open as a store (notInUse). The rename
// would replace a symbolic link itself, never writing the file it points
// to (run as root, `backup /dev/stdout` would replace the /dev/stdout
// link), and would fail on a directory; a FIFO or device is no place for
// a database. A link is refused rather than resolved: the path of the
// file it points to is the clear way to say that file is meant.
func backupTarget(file string) error {
	fi, err := os.Lstat(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s); back up to a regular file or a new path", file, fileKind(fi.Mode()))
	}
	return notInUse(file)
}

// fileKind names the type of a file that is not a regular one.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	default:
		return "type " + m.Type().String()
	}
}

func (c *cli) migrateStorage() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate-storage --from <bolt file> --to <dsn>",
		Short: "Copies a bolt store (Caddy stopped) into an empty PostgreSQL database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return errors.New("migrate-storage: --from and --to are required")
			}
			// An argument is in the process list of every local user
			// while the copy runs, and in the shell's history.
			if dsnHoldsSecret(to) {
				return errors.New("migrate-storage: --to holds a password in clear, which every local user can read in the process list; " +
					"give the dsn as a placeholder ({env.MCP_AUTH_DSN} or {file.<path>}), the password as one, or use PGPASSWORD or a .pgpass file")
			}
			dsn, err := expandSecret(caddy.NewReplacer(), to)
			if err != nil {
				return fmt.Errorf("migrate-storage: --to: %w", err)
			}
			// bolt.Open would create a missing file and fill in an empty
			// one (a truncated one it refuses).
			if fi, err := os.Stat(from); err != nil {
				return fmt.Errorf("migrate-storage: %w", err)
			} else if fi.Size() == 0 {
				return fmt.Errorf("migrate-storage: %s is empty, not a bolt database", from)
			}
			src, err := bolt.Open(from, bolt.Options{})
			if err != nil {
				return fmt.Errorf("migrate-storage: %w (stop Caddy first)", err)
			}
			defer src.Close()
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			dst, err := postgres.Open(ctx, dsn, postgres.Options{})
			if err != nil {
				return fmt.Errorf("migrate-storage: %w", err)
			}
			defer dst.Close()
			// The copy writes every record at once: where the server logs
			// statements with their parameters, all of them would be in
			// its log.
			switch why, err := dst.ParameterLogging(ctx); {
			case err != nil:
				return fmt.Errorf("migrate-storage: nothing was copied: %w", err)
			case why != "":
				return fmt.Errorf("migrate-storage: the PostgreSQL server writes the parameters of the store's statements to its log (%s), "+
					"so the copy would write every record there, the signing keys' private parts among them; nothing was copied: "+
					"as a superuser, run ALTER ROLE <the store's role> SET log_parameter_max_length = 0 (and log_parameter_max_length_on_error = 0), "+
					"or end that logging, then copy again", why)
			}
			n, err := dst.Import(ctx, src.Export)
			if errors.Is(err, store.ErrAlreadyExists) {
				return fmt.Errorf("migrate-storage: the database already holds entries, of this store or of another deployment; nothing was copied (migrate into an empty database): %w", err)
			}
			if err != nil {
				return fmt.Errorf("migrate-storage: nothing was copied: %w", err)
			}
			fmt.Fprintf(c.out, "copied %d entries from %s\n", n, from)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "The bolt database file (storage bolt's path)")
	cmd.Flags().StringVar(&to, "to", "", "The PostgreSQL connection string (libpq key=value or postgres:// URL), or a placeholder")
	return cmd
}

// adminAddress accepts the admin address as Caddy writes it
// (localhost:2019, unix//path) or as a URL (http://localhost:2019).
func adminAddress(s string) (string, error) {
	if !strings.Contains(s, "://") {
		if at := strings.LastIndex(s, "@"); at >= 0 && !strings.HasPrefix(s, "unix") {
			// user:password@host:port: no host name holds an "@" (a
			// socket's path may).
			return "", fmt.Errorf("--address %q: want host:port or http://host:port (the admin API speaks plain http)", "…"+s[at:])
		}
		return s, nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "http" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("--address %q: want host:port or http://host:port (the admin API speaks plain http)", withoutUserinfo(s))
	}
	return u.Host, nil
}

// withoutUserinfo is the URL s with what precedes its last "@" after the
// scheme replaced by "…": the refusal of an address that names a user
// and password (refused: the admin API takes none) is printed, and may
// be kept in a script's log, without the password. Not only up to the
// authority's end as a URL parser finds it: a password typed with a "/",
// "?" or "#" ("http://admin:pa#ss@host", which should be escaped) ends
// the authority there for the parser, and would be printed whole.
func withoutUserinfo(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	rest := s[i+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	return s[:i+3] + "…" + rest[at:]
}

// print writes v as indented JSON, with every rune a terminal would act
// on escaped (graphicJSON): names and display names may come from an
// identity provider's claims or a client's registration.
func (c *cli) print(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = io.WriteString(c.out, graphicJSON(string(b))+"\n")
	return err
}

// minPasswordLength is the running configuration's min_password_length
// as the admin API applies it. The API sees only the hash the CLI sends,
// so the CLI checks the length; an admin endpoint that does not show the
// configuration leaves the default.
func (c *cli) minPasswordLength() (int, error) {
	resp, err := c.request(http.MethodGet, "/config/apps/mcp_auth/min_password_length", nil)
	if err != nil {
		if errors.Is(err, errNoCaddy) {
			return 0, err
		}
		return issuer.DefaultMinPasswordLength, nil
	}
	defer resp.Body.Close()
	var n *int
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil || n == nil {
		return issuer.DefaultMinPasswordLength, nil
	}
	return cmp.Or(max(*n, 0), issuer.DefaultMinPasswordLength), nil
}

// readPasswordHash asks for a password twice on a terminal, or reads one
// line from a non-terminal stdin, and returns its bcrypt hash.
func (c *cli) readPasswordHash() (string, error) {
	minLength, err := c.minPasswordLength()
	if err != nil {
		return "", err
	}
	var pw []byte
	if f, ok := c.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(c.msg, "Password: ")
		p1, err := term.ReadPassword(fd)
		fmt.Fprintln(c.msg)
		if err != nil {
			return "", err
		}
		fmt.Fprint(c.msg, "Confirm password: ")
		p2, err := term.ReadPassword(fd)
		fmt.Fprintln(c.msg)
		if err != nil {
			return "", err
		}
		if !bytes.Equal(p1, p2) {
			return "", errors.New("passwords do not match")
		}
		pw = p1
	} else {
		line, err := bufio.NewReader(c.in).ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		pw = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	}
	if len(pw) == 0 {
		return "", errors.New("empty password")
	}
	if err := issuer.CheckPassword(string(pw), minLength); err != nil {
		return "", err
	}
	return issuer.HashPassword(string(pw), c.hashCost)
}

// keyRotate is `key rotate`: a rotation, or with --withdraw or
// --withdraw-kid an emergency withdrawal (issuer.WithdrawSigningKeys).
func (c *cli) keyRotate() *cobra.Command {
	var all bool
	var kid string
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Rotates the token signing key (the old key stays published until its tokens expire), or withdraws keys at once",
		Long: `Rotates the token signing key: the new key signs 70 s later, the old one
stays published until its tokens expire.

--withdraw withdraws every signing key at once (a leaked store or backup
holds them all), --withdraw-kid <kid> the one named: the keys are no longer
published, every token they signed is refused, and a new key signs at
once, before remote verifiers' cached JWKS know it (their tokens are
refused there until they refetch). Grants and refresh tokens stay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if all && kid != "" {
				return errors.New("--withdraw and --withdraw-kid: give one")
			}
			var body any
			switch {
			case all:
				body = map[string]any{"withdraw": true}
			case cmd.Flags().Changed("withdraw-kid"):
				if kid == "" {
					return errors.New("--withdraw-kid: want a kid")
				}
				body = map[string]any{"withdraw": kid}
			}
			var res issuer.KeyWithdrawal
			if err := c.call(http.MethodPost, "/mcp-auth/keys/rotate", body, &res); err != nil {
				return err
			}
			if res.KID != "" {
				fmt.Fprintf(c.out, "new signing key: %s\n", res.KID)
			}
			if res.IDTokenKID != "" {
				fmt.Fprintf(c.out, "new ID-token signing key: %s\n", res.IDTokenKID)
			}
			if body != nil {
				fmt.Fprintf(c.out, "withdrawn: %s\n", strings.Join(res.Withdrawn, " "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "withdraw", false, "Withdraw every signing key at once; a new key signs at once")
	cmd.Flags().StringVar(&kid, "withdraw-kid", "", "Withdraw the signing key with this kid at once; a new key signs at once")
	return cmd
}
