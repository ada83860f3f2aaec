package issuer

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// appRow is one connection on the apps page: what a user granted one
// client for one resource (and agent), merged from the consent and the
// grants (refresh-token families) it led to.
type appRow struct {
	ClientID       string
	ClientName     string
	SelfRegistered bool   // DCR or CIMD: the name is the client's own claim
	Agent          string // requested_actor the user delegated to
	AgentName      string
	// Delegates name the agents the client passed the access on to by
	// token exchange; revoking the row ends theirs too.
	Delegates []string
	Resource  string
	Scopes    []string
	Created   time.Time
	LastUsed  time.Time
}

type appsView struct {
	Action, CSRF, User, LogoutURL, Notice string
	Rows                                  []appRow
}

// handleApps is the "connected apps and agents" page: it lists what the
// logged-in user granted and lets them revoke it.
func (i *Issuer) handleApps(w http.ResponseWriter, r *http.Request) {
	i.pages.formPage(w, r, i.appsGet, i.appsPost, "Use the page's buttons.")
}

func (i *Issuer) appsGet(w http.ResponseWriter, r *http.Request) {
	q, ok := i.pages.query(w, r)
	if !ok {
		return
	}
	s, _, err := i.sessions.current(r)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if s == nil || s.User == "" {
		i.pages.seeOther(w, r, i.base+pathLogin)
		return
	}
	rows, err := i.consents.connections(r.Context(), s.User)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	v := appsView{Action: i.base + pathApps, CSRF: maskCSRF(s.CSRF), User: s.User, LogoutURL: i.base + pathLogout, Rows: rows}
	if q.Get("revoked") == "1" {
		v.Notice = "Access revoked."
	}
	i.pages.render(w, http.StatusOK, "apps", "Connected apps and agents", v)
}

func (i *Issuer) appsPost(w http.ResponseWriter, r *http.Request) {
	s, sid, ok := i.postedForm(w, r, true)
	if !ok {
		return
	}
	i.sessions.touch(w, sid, s)
	f := r.PostForm
	if f.Get("action") != "revoke" || f.Get("client_id") == "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Invalid request", "Nothing to do.")
		return
	}
	// Only a connection the page lists is revoked: one made up costs a
	// read, never a write transaction that reads every grant (and may
	// run alone: store.MayRunAlone). Not counted against the user's
	// writes, which any page the user visits can spend through
	// /authorize (review s15-fresh2 F2, F3).
	rows, err := i.consents.connections(r.Context(), s.User)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if !slices.ContainsFunc(rows, func(a appRow) bool {
		return a.ClientID == f.Get("client_id") && a.Resource == f.Get("resource") && a.Agent == f.Get("actor")
	}) {
		i.pages.seeOther(w, r, i.base+pathApps)
		return
	}
	if err := i.revokeConnection(r.Context(), s.User, f.Get("client_id"), f.Get("resource"), f.Get("actor")); err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	i.securityEvent(r.Context(), zap.InfoLevel, "connection revoked by its user", zap.String("user", s.User),
		zap.String("client_id", f.Get("client_id")), zap.String("resource", f.Get("resource")), zap.String("actor", f.Get("actor")))
	i.pages.seeOther(w, r, i.base+pathApps+"?revoked=1")
}

// connections lists the user's consents and live grants, one row per
// client, resource and agent.
func (co *consents) connections(ctx context.Context, user string) ([]appRow, error) {
	rows := map[string]*appRow{}
	row := func(clientID, resource, actor string) *appRow {
		k := consentKey(user, clientID, resource, actor)
		if rows[k] == nil {
			rows[k] = &appRow{ClientID: clientID, Resource: resource, Agent: actor}
		}
		return rows[k]
	}
	addScopes := func(ar *appRow, scopes []string) {
		for _, sc := range scopes {
			if !slices.Contains(ar.Scopes, sc) {
				ar.Scopes = append(ar.Scopes, sc)
			}
		}
	}
	earliest := func(a, b time.Time) time.Time {
		if a.IsZero() || (!b.IsZero() && b.Before(a)) {
			return b
		}
		return a
	}
	err := co.store.View(ctx, func(tx store.Tx) error {
		err := consentsIn(tx).ofUser(user, func(clientID, resource, actor string, cs *consent) error {
			ar := row(clientID, resource, actor)
			addScopes(ar, cs.Scopes)
			ar.Created = earliest(ar.Created, cs.GrantedAt)
			return nil
		})
		if err != nil {
			return err
		}
		return grantsIn(tx).selected(userGrants(user), func(g *grant) error {
			ar := row(g.ClientID, g.Resource, g.Actor)
			addScopes(ar, g.Scopes)
			for _, d := range g.Delegates {
				if !slices.Contains(ar.Delegates, d) {
					ar.Delegates = append(ar.Delegates, d)
				}
			}
			ar.Created = earliest(ar.Created, g.CreatedAt)
			if g.LastUsed.After(ar.LastUsed) {
				ar.LastUsed = g.LastUsed
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	out := make([]appRow, 0, len(rows))
	for _, ar := range rows {
		ar.ClientName, ar.SelfRegistered = co.dir.clientHeld(ctx, ar.ClientID)
		ar.AgentName = co.dir.agentName(ctx, ar.Agent)
		for n, d := range ar.Delegates {
			ar.Delegates[n] = co.dir.agentName(ctx, d)
		}
		out = append(out, *ar)
	}
	slices.SortFunc(out, func(a, b appRow) int {
		return strings.Compare(a.ClientName+"\x00"+a.Resource+"\x00"+a.Agent, b.ClientName+"\x00"+b.Resource+"\x00"+b.Agent)
	})
	return out, nil
}

// revokeConnection deletes the user's consent for client, resource and
// actor, revokes every matching grant (ending its refresh tokens, and
// its access tokens through the "grant:"+id revocation marker) and
// stamps the connection, which refuses the codes issued for it before
// (review s15-issuer F1), in one transaction, after revoking most of
// the grants ahead (revokeAhead: a connection holds as many short grants
// as the user authorizes it in an hour). appsPost calls it only for a
// connection the page lists: the stamp's key is what was posted (review
// s15-fresh F1).
func (i *Issuer) revokeConnection(ctx context.Context, user, clientID, resource, actor string) error {
	sel := grantSelection{userClientGrantsPrefix(user, clientID), func(g *grant) bool {
		return g.ofUser(user) && g.ClientID == clientID && g.Resource == resource && g.Actor == actor
	}, nil}
	if err := i.revokeAhead(ctx, sel, func(store.Tx) error { return nil }); err != nil {
		return err
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		rv := i.revocation()
		if err := consentsIn(tx).delete(user, clientID, resource, actor); err != nil {
			return err
		}
		if err := epochsIn(tx).stamp(connectionPrincipal(user, clientID, resource, actor), rv); err != nil {
			return err
		}
		return grantsIn(tx).revokeWhere(sel, rv.until)
	})
}
