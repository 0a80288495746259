package dns

import (
	"encoding/binary"
	"errors"
	"strconv"

	"golang.org/x/net/dns/dnsmessage"
)

// message is what the collector needs from one DNS message. It is filled in
// place: parsing allocates nothing.
type message struct {
	id       uint16
	response bool
	rcode    dnsmessage.RCode
	qtype    dnsmessage.Type
	answers  uint16
	// name is the question name as asked (case kept), without the trailing
	// dot, in DNS presentation format: bytes outside printable ASCII as
	// \DDD (\t, \r, \n for those three), backslash and quote escaped, so
	// it is always valid UTF-8 whatever the wire carried. "." for the root.
	name    [maxNameLen]byte
	nameLen int
}

// maxNameLen bounds an escaped name: 255 wire bytes, each at most 4 once
// escaped.
const maxNameLen = 255 * 4

// Name returns the question name as a byte slice into m.
func (m *message) Name() []byte { return m.name[:m.nameLen] }

var errNoQuestion = errors.New("dns message has no question")

// parseMessage parses the header and the first question of a DNS message
// (without the TCP length prefix) with golang.org/x/net/dns/dnsmessage. It
// never panics; malformed input returns an error. b may be a prefix of the
// message: only the header and the question have to be complete.
func parseMessage(b []byte, m *message) error {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return err
	}
	m.id = h.ID
	m.response = h.Response
	m.rcode = h.RCode
	// Start checked the 12-byte header; the answer count is its 4th field.
	m.answers = binary.BigEndian.Uint16(b[6:8])
	q, err := p.Question()
	if err != nil {
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return errNoQuestion
		}
		return err
	}
	m.qtype = q.Type
	n := int(q.Name.Length)
	if n > len(q.Name.Data) {
		n = len(q.Name.Data)
	}
	if n > 1 && q.Name.Data[n-1] == '.' {
		n--
	}
	m.nameLen = escapeName(m.name[:], q.Name.Data[:n])
	return nil
}

// escapeName writes name to dst as the conventions ask for
// dns.question.name (printable ASCII as is, others as \DDD, tab, CR and LF
// as \t, \r, \n, backslash and quote escaped) and returns its length. The
// result is ASCII, so it can never make an export fail on invalid UTF-8.
// dst must hold 4 bytes per byte of name.
func escapeName(dst, name []byte) int {
	j := 0
	for _, c := range name {
		switch {
		case c == '\\' || c == '"':
			dst[j], dst[j+1] = '\\', c
			j += 2
		case c == '\t':
			dst[j], dst[j+1] = '\\', 't'
			j += 2
		case c == '\r':
			dst[j], dst[j+1] = '\\', 'r'
			j += 2
		case c == '\n':
			dst[j], dst[j+1] = '\\', 'n'
			j += 2
		case c < 0x20 || c > 0x7e:
			dst[j], dst[j+1], dst[j+2], dst[j+3] = '\\', '0'+c/100, '0'+c/10%10, '0'+c%10
			j += 4
		default:
			dst[j] = c
			j++
		}
	}
	return j
}

// foldCase lower-cases the ASCII letters of name into dst (len(dst) >=
// len(name)) and returns dst's prefix: DNS names compare without case
// (RFC 4343), so the per-service budget of names counts them folded.
func foldCase(dst, name []byte) []byte {
	dst = dst[:len(name)]
	for i, c := range name {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst[i] = c
	}
	return dst
}

// typeNames are the otelbee.dns.question.type values (RFC mnemonics).
var typeNames = map[dnsmessage.Type]string{
	dnsmessage.TypeA:     "A",
	dnsmessage.TypeNS:    "NS",
	dnsmessage.TypeCNAME: "CNAME",
	dnsmessage.TypeSOA:   "SOA",
	dnsmessage.TypePTR:   "PTR",
	dnsmessage.TypeMX:    "MX",
	dnsmessage.TypeTXT:   "TXT",
	dnsmessage.TypeAAAA:  "AAAA",
	dnsmessage.TypeSRV:   "SRV",
	dnsmessage.TypeOPT:   "OPT",
	dnsmessage.TypeWKS:   "WKS",
	dnsmessage.TypeHINFO: "HINFO",
	dnsmessage.TypeMINFO: "MINFO",
	dnsmessage.TypeAXFR:  "AXFR",
	dnsmessage.TypeALL:   "ANY",
	dnsmessage.TypeSVCB:  "SVCB",
	dnsmessage.TypeHTTPS: "HTTPS",
	35:                   "NAPTR",
	43:                   "DS",
	46:                   "RRSIG",
	48:                   "DNSKEY",
	52:                   "TLSA",
	257:                  "CAA",
}

// typeName is the mnemonic of t, or TYPE<n> (RFC 3597) for others.
func typeName(t dnsmessage.Type) string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t))
}

// rcodeNames are the otelbee.dns.response.code values.
var rcodeNames = map[dnsmessage.RCode]string{
	dnsmessage.RCodeSuccess:        "NOERROR",
	dnsmessage.RCodeFormatError:    "FORMERR",
	dnsmessage.RCodeServerFailure:  "SERVFAIL",
	dnsmessage.RCodeNameError:      "NXDOMAIN",
	dnsmessage.RCodeNotImplemented: "NOTIMP",
	dnsmessage.RCodeRefused:        "REFUSED",
	6:                              "YXDOMAIN",
	7:                              "YXRRSET",
	8:                              "NXRRSET",
	9:                              "NOTAUTH",
	10:                             "NOTZONE",
}

func rcodeName(r dnsmessage.RCode) string {
	if s, ok := rcodeNames[r]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(int(r))
}
