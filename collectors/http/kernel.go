package httpc

import (
	"github.com/otelbee/otelbee/collectors/l7/capture"
)

// The L7 capture's kernel object (bpf/l7.c, loaded by package capture for
// every L7 protocol), under the names this package reads its maps by.
type (
	httpConnInfo       = capture.ConnInfo
	httpConnEvent      = capture.ConnEvent
	httpDataEvent      = capture.DataEvent
	httpTgidDrops      = capture.TgidDrops
	httpTgidUnobserved = capture.TgidUnobserved
)

const (
	httpMapConns      = capture.MapConns
	httpMapDrops      = capture.MapDrops
	httpMapUnobserved = capture.MapUnobserved

	httpHttpCounterHC_CONNS_HTTP          = capture.CounterConnsDecided
	httpHttpCounterHC_CONNS_NOT_HTTP      = capture.CounterConnsNone
	httpHttpCounterHC_CONNS_FILTERED      = capture.CounterConnsFiltered
	httpHttpCounterHC_CONNS_SELF          = capture.CounterConnsSelf
	httpHttpCounterHC_DROP_REQUEST_STARTS = capture.CounterDropStarts
	httpHttpCounterHC_START_REFUNDS       = capture.CounterStartRefunds
	httpHttpCounterHC_CONNS_UPGRADED      = capture.CounterConnsUpgraded
	httpHttpCounterHC_MAX                 = capture.CounterNamed
	httpHttpUnobservedUNOBSERVED_MAX      = len(capture.UnobservedReasons)
)

// Record layouts, from the generated types (package capture decodes).
var (
	connEventSize = capture.ConnEventSize
	dataHdrSize   = capture.DataHdrSize
)
