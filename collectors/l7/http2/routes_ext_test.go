package http2_test

import (
	"testing"

	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/l7/http2"
)

// The HTTP/1 collector's route table is the Router, so both versions name
// routes alike: a configured pattern is http.route, anything else the
// heuristic's url.template.
func TestHTTP1RoutesAreTheRouter(t *testing.T) {
	routes, err := httpc.NewRoutes([]string{"/users/{id}"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var r http2.Router = routes
	for path, want := range map[string]struct {
		route string
		known bool
	}{
		"/users/42":         {"/users/{id}", true},
		"/orders/17/items":  {"/orders/{id}/items", false},
		"/cart;jsession=x1": {"/cart", false},
	} {
		got := r.RouteSide("7", false, []byte(path))
		if got != want.route || r.Known(got) != want.known {
			t.Errorf("%s: route %q known %v, want %+v", path, got, r.Known(got), want)
		}
	}
}
