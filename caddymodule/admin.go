package caddymodule

import (
	"errors"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// adminBase is the admin API prefix of every mcp_auth route.
const adminBase = "/mcp-auth/"

// AdminAPI mounts the issuer's management API (issuer.Issuer.AdminHandler:
// users, clients, agents, signing keys) on Caddy's admin endpoint, under
// /mcp-auth/.
type AdminAPI struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mcp_auth",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision finds the mcp_auth app, if the config has one.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	v, err := ctx.AppIfConfigured("mcp_auth")
	if err != nil {
		// Not configured: the routes answer 404. A provisioning error
		// surfaces again, and fails the config, when Caddy loads the apps.
		return nil
	}
	a.app = v.(*App)
	return nil
}

// Routes implements caddy.AdminRouter.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: adminBase, Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	app := a.runningApp()
	if app == nil || app.Issuer() == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("the mcp_auth app is not configured")}
	}
	// Built per request: a few route patterns, cheap, and no state kept
	// here.
	http.StripPrefix(strings.TrimSuffix(adminBase, "/"), app.Issuer().AdminHandler()).ServeHTTP(w, r)
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, adminBase+"tools/") {
		// An approval applies to this process's gateways at once.
		for _, h := range app.gateways {
			h.gw.ReloadPins(r.Context())
		}
	}
	return nil
}

// runningApp is the mcp_auth app of the configuration Caddy runs. Caddy
// mounts the admin routes of a new configuration before it loads, and
// keeps them when it fails to load and the old one keeps running: the
// app this module was provisioned with may be one that never ran, or was
// stopped. Without a running configuration (before the first one loads,
// or in tests) it is that app.
func (a *AdminAPI) runningApp() *App {
	active := caddy.ActiveContext()
	if active.Context == nil {
		return a.app
	}
	v, err := active.AppIfConfigured("mcp_auth")
	if err != nil {
		return nil
	}
	app, _ := v.(*App)
	return app
}

// Interface guards
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
