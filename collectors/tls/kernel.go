package tls

import "golang.org/x/sys/unix"

// KernelDev is a device number as the kernel keeps it in a superblock
// (MKDEV: major << 20 | minor), from a stat(2) one: what a BPF program
// reading an executable's inode compares with.
func KernelDev(statDev uint64) uint32 {
	return unix.Major(statDev)<<20 | unix.Minor(statDev)
}

// Sums are GoFD as the three dereferences the kernel side makes: the
// *net.TCPConn at conn+Iface, the *net.netFD at that+TCPConnFD, the int32
// descriptor at that+NetFDSysfd.
type GoFDSums struct {
	Iface, TCPConnFD, NetFDSysfd uint64
}

// Sums returns the offsets of each dereference.
func (g *GoFD) Sums() GoFDSums {
	return GoFDSums{Iface: g.ConnConn + g.IfaceData, TCPConnFD: g.TCPConnConn + g.ConnFD, NetFDSysfd: g.NetFDPfd + g.FDSysfd}
}
