package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// tools is `caddy mcp-auth tools`: review and approve pinned tool
// definitions (mcp_gateway pin_tools).
func (c *cli) tools() *cobra.Command {
	cmd := group(&cobra.Command{Use: "tools", Short: "Reviews and approves pinned MCP tool definitions"})
	cmd.AddCommand(&cobra.Command{
		Use:   "list [<resource>]",
		Short: "Lists the pinned tools of a resource (of every resource without one)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if len(args) == 1 {
				q.Set("resource", args[0])
			}
			var pins []issuer.ToolPin
			if err := c.call(http.MethodGet, "/mcp-auth/tools?"+q.Encode(), nil, &pins); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RESOURCE\tTOOL\tPINNED\tBY\tPENDING")
			for _, p := range pins {
				pinned, by, pending := "-", "-", "-"
				if p.Pinned != nil {
					pinned, by = short(p.Pinned.Hash), p.Pinned.By
				}
				if p.Pending != nil {
					pending = short(p.Pending.Hash)
					if p.Pending.Rejected {
						pending += " (rejected)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(p.Resource), printable(p.Tool), pinned, by, pending)
			}
			return tw.Flush()
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "diff <resource> <tool>",
		Short: "Shows where the pending definition differs from the pinned one, and both",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p issuer.ToolPin
			q := url.Values{"resource": {args[0]}, "tool": {args[1]}}
			if err := c.call(http.MethodGet, "/mcp-auth/tools?"+q.Encode(), nil, &p); err != nil {
				return err
			}
			writeDiff(c.out, &p)
			return nil
		},
	})
	for _, a := range []struct{ use, short, done string }{
		{"approve", "Pins the tool's pending definition (or confirms a first-use pin) for every gateway on the store", "approved"},
		{"reject", "Refuses the tool's pending definition: it stays hidden and refused", "rejected"},
		{"forget", "Removes the tool's pin: first_use pins the next definition listed, approved mode needs a new approval", "forgot"},
	} {
		var hash string
		sub := &cobra.Command{
			Use:   a.use + " <resource> <tool>",
			Short: a.short,
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				var p issuer.ToolPin
				req := issuer.ToolPinRequest{Resource: args[0], Tool: args[1], Hash: hash}
				if err := c.call(http.MethodPost, "/mcp-auth/tools/"+a.use, req, &p); err != nil {
					return err
				}
				fmt.Fprintf(c.out, "%s %s of %s", a.done, args[1], args[0])
				if a.use == "approve" && p.Pinned != nil {
					// Without --hash the approval takes whatever was
					// pending then: this says which, to check against
					// what tools diff showed.
					fmt.Fprintf(c.out, ": definition %s", printable(p.Pinned.Hash))
				}
				fmt.Fprintln(c.out)
				return nil
			},
		}
		sub.Flags().StringVar(&hash, "hash", "", "the definition hash (from tools diff) the decision is about; refused if the server changed it since")
		cmd.AddCommand(sub)
	}
	return cmd
}

// writeDiff writes tools diff's review of a pin: the pinned and pending
// definitions and the pointers where they differ. Everything in them is
// the server's to choose, down to member names, so nothing is printed
// that a terminal would act on (printable, graphicJSON): the party under
// review cannot rewrite the review.
func writeDiff(w io.Writer, p *issuer.ToolPin) {
	var pinned []byte
	if p.Pinned != nil {
		pinned = p.Pinned.Definition
		fmt.Fprintf(w, "pinned %s (%s, %s):\n%s\n", printable(p.Pinned.Hash), printable(p.Pinned.By), p.Pinned.At.Format("2006-01-02 15:04:05Z07:00"), indent(pinned))
	}
	if p.Pending == nil {
		fmt.Fprintln(w, "nothing pending: the server offers the pinned definition")
		return
	}
	fmt.Fprintf(w, "pending %s (offered %s):\n%s\n", printable(p.Pending.Hash), p.Pending.At.Format("2006-01-02 15:04:05Z07:00"), indent(p.Pending.Definition))
	fmt.Fprintln(w, "changes:")
	for _, ch := range gateway.DefinitionChanges(pinned, p.Pending.Definition) {
		fmt.Fprintf(w, "  %s\n", printable(ch))
	}
}

// printable quotes a name the server chose when it holds what a terminal
// would act on (escape sequences, carriage returns, tabs, bidi controls),
// so that no tool can rewrite or hide a row of the operator's table.
func printable(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	return strconv.QuoteToGraphic(s)
}

// short abbreviates a definition hash for tables.
func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// indent is a definition indented for reading, in graphicJSON.
func indent(def []byte) string {
	var b bytes.Buffer
	if json.Indent(&b, def, "  ", "  ") != nil {
		return "  " + printable(string(def))
	}
	return "  " + graphicJSON(b.String())
}

// graphicJSON is JSON text with every rune a terminal could act on
// (controls, C1 controls such as CSI, bidi and other format characters,
// separators but the plain space) written as a \u escape, which JSON
// reads the same; outside strings JSON text holds only its own
// whitespace, kept as it is.
func graphicJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\n' || r == ' ' || unicode.IsGraphic(r) && !unicode.Is(unicode.Cf, r) && r != utf8.RuneError {
			b.WriteRune(r)
			continue
		}
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, "\\u%04x\\u%04x", r1, r2)
			continue
		}
		fmt.Fprintf(&b, "\\u%04x", r)
	}
	return b.String()
}
