package vhostuser

import (
	"fmt"
	"strings"
)

// Request is the request type carried in the first header word. Requests
// travel from the front-end to the back-end; a reply echoes the request type
// of the message it answers.
type Request uint32

// Front-end request types. The numbering is the protocol's; gaps are
// requests this package knows by name but does not implement (they are
// decoded as [Raw] and refused).
const (
	ReqGetFeatures         Request = 1
	ReqSetFeatures         Request = 2
	ReqSetOwner            Request = 3
	ReqResetOwner          Request = 4 // deprecated; accepted and ignored
	ReqSetMemTable         Request = 5
	ReqSetLogBase          Request = 6 // not implemented
	ReqSetLogFD            Request = 7 // not implemented
	ReqSetVringNum         Request = 8
	ReqSetVringAddr        Request = 9
	ReqSetVringBase        Request = 10
	ReqGetVringBase        Request = 11
	ReqSetVringKick        Request = 12
	ReqSetVringCall        Request = 13
	ReqSetVringErr         Request = 14
	ReqGetProtocolFeatures Request = 15
	ReqSetProtocolFeatures Request = 16
	ReqGetQueueNum         Request = 17
	ReqSetVringEnable      Request = 18
	ReqSendRARP            Request = 19
	ReqNetSetMTU           Request = 20
	ReqSetBackendReqFD     Request = 21 // not implemented
	ReqIOTLBMsg            Request = 22 // not implemented
	ReqSetVringEndian      Request = 23 // not implemented
	ReqGetConfig           Request = 24
	ReqSetConfig           Request = 25
	ReqCreateCryptoSession Request = 26 // not implemented
	ReqCloseCryptoSession  Request = 27 // not implemented
	ReqPostcopyAdvise      Request = 28 // not implemented
	ReqPostcopyListen      Request = 29 // not implemented
	ReqPostcopyEnd         Request = 30 // not implemented
	ReqGetInflightFD       Request = 31 // not implemented
	ReqSetInflightFD       Request = 32 // not implemented
	ReqGPUSetSocket        Request = 33 // not implemented
	ReqResetDevice         Request = 34
	ReqVringKick           Request = 35 // in-band kick; not implemented
	ReqGetMaxMemSlots      Request = 36
	ReqAddMemReg           Request = 37
	ReqRemMemReg           Request = 38
	ReqSetStatus           Request = 39
	ReqGetStatus           Request = 40
	maxKnownRequest                = ReqGetStatus
	minKnownRequest                = ReqGetFeatures
)

// requestNames is indexed by Request; it is never modified.
var requestNames = [...]string{
	ReqGetFeatures:         "GET_FEATURES",
	ReqSetFeatures:         "SET_FEATURES",
	ReqSetOwner:            "SET_OWNER",
	ReqResetOwner:          "RESET_OWNER",
	ReqSetMemTable:         "SET_MEM_TABLE",
	ReqSetLogBase:          "SET_LOG_BASE",
	ReqSetLogFD:            "SET_LOG_FD",
	ReqSetVringNum:         "SET_VRING_NUM",
	ReqSetVringAddr:        "SET_VRING_ADDR",
	ReqSetVringBase:        "SET_VRING_BASE",
	ReqGetVringBase:        "GET_VRING_BASE",
	ReqSetVringKick:        "SET_VRING_KICK",
	ReqSetVringCall:        "SET_VRING_CALL",
	ReqSetVringErr:         "SET_VRING_ERR",
	ReqGetProtocolFeatures: "GET_PROTOCOL_FEATURES",
	ReqSetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	ReqGetQueueNum:         "GET_QUEUE_NUM",
	ReqSetVringEnable:      "SET_VRING_ENABLE",
	ReqSendRARP:            "SEND_RARP",
	ReqNetSetMTU:           "NET_SET_MTU",
	ReqSetBackendReqFD:     "SET_BACKEND_REQ_FD",
	ReqIOTLBMsg:            "IOTLB_MSG",
	ReqSetVringEndian:      "SET_VRING_ENDIAN",
	ReqGetConfig:           "GET_CONFIG",
	ReqSetConfig:           "SET_CONFIG",
	ReqCreateCryptoSession: "CREATE_CRYPTO_SESSION",
	ReqCloseCryptoSession:  "CLOSE_CRYPTO_SESSION",
	ReqPostcopyAdvise:      "POSTCOPY_ADVISE",
	ReqPostcopyListen:      "POSTCOPY_LISTEN",
	ReqPostcopyEnd:         "POSTCOPY_END",
	ReqGetInflightFD:       "GET_INFLIGHT_FD",
	ReqSetInflightFD:       "SET_INFLIGHT_FD",
	ReqGPUSetSocket:        "GPU_SET_SOCKET",
	ReqResetDevice:         "RESET_DEVICE",
	ReqVringKick:           "VRING_KICK",
	ReqGetMaxMemSlots:      "GET_MAX_MEM_SLOTS",
	ReqAddMemReg:           "ADD_MEM_REG",
	ReqRemMemReg:           "REM_MEM_REG",
	ReqSetStatus:           "SET_STATUS",
	ReqGetStatus:           "GET_STATUS",
}

// String returns the protocol name without the VHOST_USER_ prefix, or
// "REQUEST(n)" for a number the protocol does not define.
func (r Request) String() string {
	if r >= minKnownRequest && r <= maxKnownRequest && requestNames[r] != "" {
		return requestNames[r]
	}
	return fmt.Sprintf("REQUEST(%d)", uint32(r))
}

// Flags is the second header word.
type Flags uint32

// Header flag bits.
const (
	// FlagVersionMask selects the version field (bits 0-1).
	FlagVersionMask Flags = 0x3
	// Version1 is the only protocol version.
	Version1 Flags = 0x1
	// FlagReply marks a message sent by the back-end in answer to a request.
	FlagReply Flags = 0x4
	// FlagNeedReply asks the back-end for a u64 status reply (REPLY_ACK).
	FlagNeedReply Flags = 0x8

	knownFlags = FlagVersionMask | FlagReply | FlagNeedReply
)

// FeatureProtocolFeatures is virtio feature bit 30 reused by vhost-user: a
// back-end that reports it in GET_FEATURES understands GET/SET_PROTOCOL_FEATURES
// and starts rings disabled (SET_VRING_ENABLE turns them on).
const FeatureProtocolFeatures uint64 = 1 << 30

// ProtocolFeatures is the vhost-user protocol feature bitmask negotiated with
// GET/SET_PROTOCOL_FEATURES.
type ProtocolFeatures uint64

// Protocol feature bits.
const (
	ProtocolMQ                  ProtocolFeatures = 1 << 0
	ProtocolLogSHMFD            ProtocolFeatures = 1 << 1
	ProtocolRARP                ProtocolFeatures = 1 << 2
	ProtocolReplyAck            ProtocolFeatures = 1 << 3
	ProtocolMTU                 ProtocolFeatures = 1 << 4
	ProtocolBackendReq          ProtocolFeatures = 1 << 5
	ProtocolCrossEndian         ProtocolFeatures = 1 << 6
	ProtocolCryptoSession       ProtocolFeatures = 1 << 7
	ProtocolPagefault           ProtocolFeatures = 1 << 8
	ProtocolConfig              ProtocolFeatures = 1 << 9
	ProtocolBackendSendFD       ProtocolFeatures = 1 << 10
	ProtocolHostNotifier        ProtocolFeatures = 1 << 11
	ProtocolInflightSHMFD       ProtocolFeatures = 1 << 12
	ProtocolResetDevice         ProtocolFeatures = 1 << 13
	ProtocolInbandNotifications ProtocolFeatures = 1 << 14
	ProtocolConfigureMemSlots   ProtocolFeatures = 1 << 15
	ProtocolStatus              ProtocolFeatures = 1 << 16
	ProtocolXenMmap             ProtocolFeatures = 1 << 17
	ProtocolSharedObject        ProtocolFeatures = 1 << 18
	ProtocolDeviceState         ProtocolFeatures = 1 << 19

	// SupportedProtocolFeatures are the extensions this package implements on
	// both sides. Anything else is never negotiated: the front-end does not
	// ask for it and Serve does not advertise it.
	SupportedProtocolFeatures = ProtocolMQ | ProtocolRARP | ProtocolReplyAck |
		ProtocolMTU | ProtocolConfig | ProtocolResetDevice |
		ProtocolConfigureMemSlots | ProtocolStatus
)

var protocolFeatureNames = [...]string{
	"MQ", "LOG_SHMFD", "RARP", "REPLY_ACK", "MTU", "BACKEND_REQ",
	"CROSS_ENDIAN", "CRYPTO_SESSION", "PAGEFAULT", "CONFIG",
	"BACKEND_SEND_FD", "HOST_NOTIFIER", "INFLIGHT_SHMFD", "RESET_DEVICE",
	"INBAND_NOTIFICATIONS", "CONFIGURE_MEM_SLOTS", "STATUS", "XEN_MMAP",
	"SHARED_OBJECT", "DEVICE_STATE",
}

// Has reports whether every bit of want is set in p.
func (p ProtocolFeatures) Has(want ProtocolFeatures) bool { return p&want == want }

// String lists the set bits by name, e.g. "MQ|REPLY_ACK".
func (p ProtocolFeatures) String() string {
	if p == 0 {
		return "0"
	}
	var parts []string
	for bit := 0; bit < 64; bit++ {
		if p&(1<<bit) == 0 {
			continue
		}
		if bit < len(protocolFeatureNames) {
			parts = append(parts, protocolFeatureNames[bit])
		} else {
			parts = append(parts, fmt.Sprintf("BIT%d", bit))
		}
	}
	return strings.Join(parts, "|")
}

// Protocol limits.
const (
	// HeaderSize is the size of the fixed message header.
	HeaderSize = 12
	// MaxPayloadSize bounds any payload this package reads. Every payload the
	// implemented requests define is far smaller; the bound exists so an
	// unknown request's payload can be skipped without trusting its size.
	MaxPayloadSize = 4096
	// MaxFDs is the most descriptors one message may carry (QEMU's limit, and
	// the memory table's region limit).
	MaxFDs = 8
	// MaxMemTableRegions is the most regions SET_MEM_TABLE can describe.
	MaxMemTableRegions = 8
	// MaxConfigSize bounds offset+size of a GET/SET_CONFIG access.
	MaxConfigSize = 4096
	// MaxVringIndex is the largest queue index SET_VRING_KICK/CALL/ERR can
	// encode (bits 0-7 of their payload).
	MaxVringIndex = 0xff

	vringFileIndexMask = 0xff
	vringFileNoFD      = 1 << 8
)

// ConfigFlags qualifies a SET_CONFIG access.
type ConfigFlags uint32

// Config access flags.
const (
	// ConfigWritable is a driver write to a writable config field.
	ConfigWritable ConfigFlags = 0
	// ConfigMigration is a write during live migration, which may also set
	// read-only fields.
	ConfigMigration ConfigFlags = 1
)
