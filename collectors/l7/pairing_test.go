package l7

import "testing"

func TestFIFO(t *testing.T) {
	f := NewFIFO[int](3)
	for i := 1; i <= 3; i++ {
		p := f.Push()
		if p == nil {
			t.Fatalf("push %d refused", i)
		}
		*p = i
	}
	if f.Push() != nil {
		t.Fatal("push past capacity accepted")
	}
	if *f.Back() != 3 {
		t.Fatalf("back = %d", *f.Back())
	}
	for want := 1; want <= 2; want++ {
		if got := *f.Front(); got != want {
			t.Fatalf("front = %d, want %d", got, want)
		}
		f.Pop()
	}
	*f.Push() = 4 // wraps around
	*f.Push() = 5
	for _, want := range []int{3, 4, 5} {
		if got := *f.Front(); got != want {
			t.Fatalf("front = %d, want %d", got, want)
		}
		f.Pop()
	}
	if f.Len() != 0 || f.Front() != nil || f.Back() != nil {
		t.Fatal("not empty")
	}
	f.Pop() // on empty: no-op
	*f.Push() = 9
	f.Clear()
	if f.Len() != 0 {
		t.Fatal("clear left requests")
	}
}

func TestByID(t *testing.T) {
	b := NewByID[uint32, int](2)
	v, rep := b.Add(1)
	if v == nil || rep {
		t.Fatal("add 1")
	}
	*v = 10
	if v, _ = b.Add(3); v == nil {
		t.Fatal("add 3")
	}
	*v = 30
	if v, _ = b.Add(5); v != nil {
		t.Fatal("add past capacity accepted")
	}
	if v, rep = b.Add(1); v == nil || !rep || *v != 0 {
		t.Fatalf("re-add 1: %v %v", v, rep)
	}
	if *b.Get(3) != 30 || b.Get(7) != nil {
		t.Fatal("get")
	}
	b.Remove(3)
	b.Remove(3)
	if b.Len() != 1 {
		t.Fatalf("len %d", b.Len())
	}
	n := 0
	b.Each(func(uint32, *int) { n++ })
	if n != 1 {
		t.Fatalf("each saw %d", n)
	}
	b.Clear()
	if b.Len() != 0 {
		t.Fatal("clear")
	}
}

func TestPairingAllocatesNothingWarm(t *testing.T) {
	f := NewFIFO[[64]byte](8)
	b := NewByID[uint32, [64]byte](8)
	b.Add(1)
	b.Remove(1)
	allocs := testing.AllocsPerRun(1000, func() {
		f.Push()
		f.Pop()
		b.Add(2)
		b.Remove(2)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request", allocs)
	}
}
