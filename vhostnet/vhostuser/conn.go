package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ReadMessage reads one message from c and validates it for direction dir
// (see [DecodeMessage]). It reads the header, then exactly the announced
// payload, across as many short reads as the socket delivers, collecting
// every descriptor that arrives on the way (SCM_RIGHTS, close-on-exec).
//
// A clean end of stream before the first header byte returns an error
// wrapping io.EOF; an end of stream inside a message wraps
// io.ErrUnexpectedEOF. Malformed input returns a [*ProtocolError]. On any
// error every received descriptor has been closed.
func ReadMessage(c *net.UnixConn, dir Direction) (*Message, error) {
	var files []*os.File
	buf := make([]byte, HeaderSize, HeaderSize+64)
	oob := make([]byte, unix.CmsgSpace(MaxFDs*4))

	got, err := readFull(c, buf, oob, &files)
	if err != nil {
		closeFiles(files)
		if got == 0 && errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("vhost-user: read header: %w", io.EOF)
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("vhost-user: read header: %w", err)
	}
	req := Request(ne.Uint32(buf[0:]))
	size := ne.Uint32(buf[8:])
	if size > MaxPayloadSize {
		// The stream cannot be trusted past this point: do not read on.
		closeFiles(files)
		return nil, protoErr(req, "payload size %d exceeds %d", size, MaxPayloadSize)
	}
	if size > 0 {
		buf = append(buf, make([]byte, size)...)
		if _, err := readFull(c, buf[HeaderSize:], oob, &files); err != nil {
			closeFiles(files)
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("vhost-user: read %v payload: %w", req, err)
		}
	}
	return DecodeMessage(buf, files, dir)
}

// errTooManyFDs reports descriptors beyond MaxFDs, which the kernel
// truncates (MSG_CTRUNC) or which arrived spread over several reads.
var errTooManyFDs = errors.New("too many descriptors attached")

// readFull fills buf from c, appending received descriptors to *files as
// *os.File (so they have an owner the moment they exist). It returns the
// number of bytes read.
func readFull(c *net.UnixConn, buf, oob []byte, files *[]*os.File) (int, error) {
	got := 0
	for got < len(buf) {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf[got:], oob)
		if oobn > 0 {
			if perr := collectRights(oob[:oobn], files); perr != nil && err == nil {
				err = perr
			}
		}
		got += n
		if err == nil && flags&unix.MSG_CTRUNC != 0 {
			err = &ProtocolError{Reason: errTooManyFDs.Error() + " (control message truncated)"}
		}
		if err == nil && len(*files) > MaxFDs {
			err = &ProtocolError{Reason: fmt.Sprintf("%v: %d, at most %d", errTooManyFDs, len(*files), MaxFDs)}
		}
		if err != nil {
			return got, err
		}
		if n == 0 {
			return got, io.EOF
		}
	}
	return got, nil
}

// collectRights takes ownership of every descriptor in an SCM_RIGHTS
// control message.
func collectRights(oob []byte, files *[]*os.File) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("parse control message: %w", err)
	}
	var firstErr error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("parse SCM_RIGHTS: %w", err)
			}
			continue
		}
		for _, fd := range fds {
			*files = append(*files, os.NewFile(uintptr(fd), "vhost-user-fd"))
		}
	}
	return firstErr
}

// WriteMessage encodes m, checks it against the rules for direction dir,
// and sends it with m.Files attached as SCM_RIGHTS. The files stay owned by
// the caller. A short write is completed without re-sending descriptors.
func WriteMessage(c *net.UnixConn, m *Message, dir Direction) error {
	fds := make([]int, 0, len(m.Files))
	for _, f := range m.Files {
		fd, err := fileFD(f)
		if err != nil {
			return fmt.Errorf("vhost-user: send %v: %w", m.Request, err)
		}
		fds = append(fds, fd)
	}
	err := writeMessage(c, m, dir, fds)
	runtime.KeepAlive(m.Files)
	return err
}

// writeMessage sends m with the raw descriptors fds, which the caller keeps
// open for the duration of the call.
func writeMessage(c *net.UnixConn, m *Message, dir Direction, fds []int) error {
	if len(fds) > MaxFDs {
		return fmt.Errorf("vhost-user: send %v: %d descriptors, at most %d", m.Request, len(fds), MaxFDs)
	}
	buf, err := m.encode(dir, len(fds))
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := c.WriteMsgUnix(buf, oob, nil)
	for err == nil && n < len(buf) {
		var k int
		k, err = c.Write(buf[n:])
		n += k
	}
	if err != nil {
		return fmt.Errorf("vhost-user: send %v: %w", m.Request, err)
	}
	return nil
}

// fileFD returns f's descriptor without the side effect of (*os.File).Fd,
// which switches the file to blocking mode.
func fileFD(f *os.File) (int, error) {
	if f == nil {
		return -1, errors.New("nil file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("file %s: %w", f.Name(), err)
	}
	fd := -1
	if err := rc.Control(func(raw uintptr) { fd = int(raw) }); err != nil {
		return -1, fmt.Errorf("file %s: %w", f.Name(), err)
	}
	return fd, nil
}
