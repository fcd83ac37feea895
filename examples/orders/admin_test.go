package main

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Admin endpoints are off without a configured token, refuse a missing
// or wrong bearer token with 401 and a challenge, and work with the
// right one.
func TestAdminToken(t *testing.T) {
	rebuild := "/admin/projections/stats/rebuild"
	t.Run("no token configured", func(t *testing.T) {
		addr, _, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data")})
		defer stop()
		for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
			code, out, _ := send(t, "POST", "http://"+addr+rebuild, "", map[string]string{"Authorization": auth})
			require.Equal(t, http.StatusForbidden, code, "Authorization %q", auth)
			require.Contains(t, out["error"], "admin endpoints are disabled: start the service with -admin-token or ESRAFT_ADMIN_TOKEN")
		}
	})
	t.Run("token configured", func(t *testing.T) {
		addr, a, _, stop := startAppWith(t, config{data: filepath.Join(t.TempDir(), "data"), adminToken: "s3cret-token"})
		defer stop()
		for _, c := range []struct{ auth, errHas, challenge string }{
			{"", "the admin token (Authorization: Bearer <token>)", `Bearer realm="esraft admin"`},
			{"Basic czNjcmV0LXRva2Vu", "the admin token (Authorization: Bearer <token>)", `Bearer realm="esraft admin"`},
			{"Bearer s3cret-toke", "the admin token is wrong", `Bearer realm="esraft admin", error="invalid_token"`},
			{"Bearer s3cret-token2", "the admin token is wrong", `Bearer realm="esraft admin", error="invalid_token"`},
		} {
			code, out, h := send(t, "POST", "http://"+addr+rebuild, "", map[string]string{"Authorization": c.auth})
			require.Equal(t, http.StatusUnauthorized, code, "Authorization %q", c.auth)
			require.Equal(t, c.challenge, h.Get("WWW-Authenticate"))
			require.Contains(t, out["error"], c.errHas)
		}
		require.Nil(t, a.projections["stats"].Status().Rebuild, "no rebuild started")
		code, out, _ := send(t, "POST", "http://"+addr+rebuild, "", map[string]string{"Authorization": "Bearer s3cret-token"})
		require.Equal(t, http.StatusAccepted, code)
		require.Equal(t, "stats", out["name"])
		waitRebuilt(t, a.projections["stats"])
	})
}
