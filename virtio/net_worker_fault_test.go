package virtio_test

import (
	"strings"
	"testing"
	"time"

	"github.com/govmm/govmm/kvm/kvmtest"
	"github.com/govmm/govmm/virtio"
	vt "github.com/govmm/govmm/virtio/virtiotest"
)

// TestNetPairWorkerSurvivesTruncatedMemory: guest memory a vhost-user
// frontend shares is a file it can truncate; the worker's next touch of
// the rings then faults (SIGBUS). That must end the pair with an error,
// not the process.
func TestNetPairWorkerSurvivesTruncatedMemory(t *testing.T) {
	mem, err := vt.NewSharedMemory("govmm-fault-test", 0x10000, 1<<20)
	mustNoErr(t, err)
	defer mem.Close()
	rxd, err := vt.NewDriver(mem.Memory, 16)
	mustNoErr(t, err)
	txd, err := vt.NewDriver(mem.Memory, 16)
	mustNoErr(t, err)
	rxq, err := rxd.Queue(fV1)
	mustNoErr(t, err)
	txq, err := txd.Queue(fV1)
	mustNoErr(t, err)
	io := newSockIO(t)
	pair, err := virtio.NewNetQueuePair(virtio.NetQueuePairConfig{
		RX: rxq, TX: txq, IO: io, Features: fV1, Interrupt: virtio.EventFDInterrupt(kvmtest.NewEventFD(t)),
	})
	mustNoErr(t, err)
	txKick := kvmtest.NewEventFD(t)
	idle := make(chan struct{}, 1)
	errc := make(chan error, 1)
	w, err := virtio.StartNetPairWorker(virtio.NetPairWorkerConfig{
		Pair: pair, RXKick: kvmtest.NewEventFD(t), TXKick: txKick,
		OnError: func(err error) { errc <- err },
		OnIdle: func() {
			select {
			case idle <- struct{}{}:
			default:
			}
		},
	})
	mustNoErr(t, err)
	defer w.Stop()
	select {
	case <-idle: // the first pass is over; the worker is parked
	case <-time.After(5 * time.Second):
		t.Fatal("worker never went idle")
	}
	if err := mem.File.Truncate(0); err != nil {
		t.Fatal(err)
	}
	mustNoErr(t, txKick.Signal())
	select {
	case err := <-errc:
		if !strings.Contains(err.Error(), "faulted") {
			t.Errorf("OnError(%v), want a guest memory fault", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no OnError within 5 s of the fault")
	}
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("worker did not exit after the fault")
	}
}
