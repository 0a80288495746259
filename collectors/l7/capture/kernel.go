package capture

// The kernel object's types and names for the collectors that read its
// maps themselves (HTTP/1's per-process drop and unobserved counters).
type (
	ConnInfo       = l7ConnInfo
	ConnEvent      = l7ConnEvent
	DataEvent      = l7DataEvent
	TgidDrops      = l7TgidDrops
	TgidUnobserved = l7TgidUnobserved
	CommKey        = l7CommKey
)

// Map names.
const (
	MapConns      = l7MapConns
	MapDrops      = l7MapDrops
	MapUnobserved = l7MapUnobserved
	MapFilterComm = l7MapFilterComm
	MapTLSTgids   = l7MapTlsTgids
)

// Kernel enums the collectors read.
const (
	RoleServer = uint8(l7HttpRoleROLE_SERVER)
	RoleClient = uint8(l7HttpRoleROLE_CLIENT)

	FilterSelf = uint8(l7FilterActionFILTER_SELF)

	CounterConnsDecided   = int(l7HttpCounterHC_CONNS_HTTP)
	CounterConnsNone      = int(l7HttpCounterHC_CONNS_NOT_HTTP)
	CounterConnsFiltered  = int(l7HttpCounterHC_CONNS_FILTERED)
	CounterConnsSelf      = int(l7HttpCounterHC_CONNS_SELF)
	CounterDropStarts     = int(l7HttpCounterHC_DROP_REQUEST_STARTS)
	CounterStartRefunds   = int(l7HttpCounterHC_START_REFUNDS)
	CounterConnsUpgraded  = int(l7HttpCounterHC_CONNS_UPGRADED)
	CounterConnsInherited = int(l7HttpCounterHC_CONNS_INHERITED)
	CounterNamed          = int(l7HttpCounterHC_MAX)

	UnobservedMax = int(l7HttpUnobservedUNOBSERVED_MAX)
)

// UnobservedReasons name the kernel's unobserved kinds (enum
// http_unobserved): a protocol's start whose collector is off (its name),
// TLS whose plaintext no source gives, or nothing known.
var UnobservedReasons = [l7HttpUnobservedUNOBSERVED_MAX]string{
	l7HttpUnobservedUNOBSERVED_TLS:       "tls",
	l7HttpUnobservedUNOBSERVED_HTTP2:     "http2",
	l7HttpUnobservedUNOBSERVED_UNKNOWN:   "unknown",
	l7HttpUnobservedUNOBSERVED_HTTP1:     "http",
	l7HttpUnobservedUNOBSERVED_POSTGRES:  "postgresql",
	l7HttpUnobservedUNOBSERVED_MYSQL:     "mysql",
	l7HttpUnobservedUNOBSERVED_REDIS:     "redis",
	l7HttpUnobservedUNOBSERVED_MEMCACHED: "memcached",
	l7HttpUnobservedUNOBSERVED_KAFKA:     "kafka",
}

// CommKeyOf is an executable name as the kernel's comm key.
func CommKeyOf(name string) CommKey { return commKey(name) }
