package vhostnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/govmm/govmm/virtio"
)

// ctrlCommand is one parsed control-queue request.
type ctrlCommand struct {
	class, cmd uint8
	data       []byte
}

// maxCtrlData bounds the command payload copied out of guest memory (a
// MAC table with a few hundred entries fits).
const maxCtrlData = 4096

// errCtrlMalformed: a control chain without room for the header or ack.
var errCtrlMalformed = errors.New("malformed control-queue request")

// parseCtrl reads a control request from the readable part of a chain
// (header: class, command; then the command data) of total length n.
// The device needs at least one writable byte for the ack, checked by the
// caller.
func parseCtrl(readable []byte) (ctrlCommand, error) {
	if len(readable) < 2 {
		return ctrlCommand{}, fmt.Errorf("%w: %d readable bytes", errCtrlMalformed, len(readable))
	}
	c := ctrlCommand{class: readable[0], cmd: readable[1], data: readable[2:]}
	if len(c.data) > maxCtrlData {
		c.data = c.data[:maxCtrlData]
	}
	return c, nil
}

// ctrlDecision is what the device does about a command.
type ctrlDecision struct {
	ack   uint8
	pairs int // > 0: VQ_PAIRS_SET to this many pairs
}

// decideCtrl validates a command against the negotiated features and the
// device's queue pairs. Unknown commands are refused (ack ERR); filtering
// commands are accepted without filtering (the backend delivers every
// frame, which a driver asking for promiscuous or all-multicast modes
// expects, and one asking for filters tolerates).
func decideCtrl(c ctrlCommand, features uint64, maxPairs int) ctrlDecision {
	switch c.class {
	case ctrlClassMQ:
		if features&netFMQ == 0 || c.cmd != ctrlMQPairsSet || len(c.data) < 2 {
			return ctrlDecision{ack: ctrlErr}
		}
		n := int(binary.LittleEndian.Uint16(c.data))
		if n < 1 || n > maxPairs {
			return ctrlDecision{ack: ctrlErr}
		}
		return ctrlDecision{ack: ctrlOK, pairs: n}
	case ctrlClassRx, ctrlClassMAC, ctrlClassVLAN, ctrlClassAnnounce:
		return ctrlDecision{ack: ctrlOK}
	}
	return ctrlDecision{ack: ctrlErr}
}

// ctrlWorker serves the control queue in the VMM while the data queues run
// in the backend. Kicks arrive as MMIO exits (NotifyQueue) and wake it.
type ctrlWorker struct {
	q        *virtio.Queue
	features uint64
	maxPairs int
	irq      virtio.Interrupt
	fail     func(error)
	setPairs func(n int) error
	// idle, if set (tests), receives a value each time the worker has
	// processed everything and waits for a kick: the handoff that lets a
	// test driver touch the ring without racing the worker.
	idle chan<- struct{}

	wake chan struct{}
	quit chan struct{}
	done sync.WaitGroup
}

func startCtrl(w *ctrlWorker) *ctrlWorker {
	w.wake = make(chan struct{}, 1)
	w.quit = make(chan struct{})
	w.done.Add(1)
	go w.run()
	w.notify() // requests posted before DRIVER_OK
	return w
}

// notify wakes the worker; it never blocks.
func (w *ctrlWorker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop ends the worker and waits for it.
func (w *ctrlWorker) stop() {
	close(w.quit)
	w.done.Wait()
}

func (w *ctrlWorker) run() {
	defer w.done.Done()
	for {
		select {
		case <-w.quit:
			return
		case <-w.wake:
		}
		w.drain()
		if w.idle != nil {
			select {
			case w.idle <- struct{}{}:
			case <-w.quit:
				return
			}
		}
	}
}

// ctrlBudget is how many requests drain serves before it looks for a stop
// request: a driver that refills the queue as fast as it is served cannot
// hold stop off.
const ctrlBudget = 64

// drain serves every request available, in batches of ctrlBudget with a
// look for stop in between; it returns early when stop was asked for.
func (w *ctrlWorker) drain() {
	var c virtio.Chain
	done := 0
	for {
		if done >= ctrlBudget {
			select {
			case <-w.quit:
				return
			default:
			}
			done = 0
		}
		ok, err := w.q.PopInto(&c)
		if err != nil {
			w.fail(fmt.Errorf("control queue: %w", err))
			return
		}
		if !ok {
			if !w.q.EnableNotification() {
				return
			}
			done++ // requests arrived meanwhile: count the retry too
			continue
		}
		done++
		written := w.handle(&c)
		if err := w.q.Push(c.Head, written); err != nil {
			w.fail(fmt.Errorf("control queue: %w", err))
			return
		}
		if w.q.NeedsInterrupt() {
			if err := w.irq.Signal(virtio.InterruptUsedBuffer); err != nil {
				w.fail(fmt.Errorf("control queue interrupt: %w", err))
				return
			}
		}
	}
}

// handle executes one request and writes its ack; it returns the number of
// bytes written.
func (w *ctrlWorker) handle(c *virtio.Chain) uint32 {
	if c.WritableLen < 1 {
		return 0 // nowhere to put the ack: complete it unanswered
	}
	var buf [2 + maxCtrlData]byte
	n := c.CopyReadable(buf[:])
	ack := uint8(ctrlErr)
	if cmd, err := parseCtrl(buf[:n]); err == nil {
		d := decideCtrl(cmd, w.features, w.maxPairs)
		ack = d.ack
		if d.pairs > 0 && w.setPairs(d.pairs) != nil {
			ack = ctrlErr
		}
	}
	c.FillWritable([]byte{ack})
	return 1
}
