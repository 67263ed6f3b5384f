package escrow

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Audit actions fvescrow records.
const (
	ActionKeyEscrowed      = "key.escrowed"
	ActionKeySeen          = "key.seen" // a known key arrived again in a new CMS
	ActionKeyUndecryptable = "key.undecryptable"
	ActionKeyRevealed      = "key.revealed"
	ActionTokenEscrowed    = "token.escrowed"
	ActionTokenServed      = "token.served"
	// A token withdrawn at the device's request (SetBootstrapToken without
	// a token): its version is superseded with no successor, and kept.
	ActionTokenWithdrawn  = "token.withdrawn"
	ActionDeviceRetired   = "device.retired"
	ActionEscrowCertAdded = "escrow-cert.added"
	ActionExportCreated   = "export.created"
)

// Event is something that happened, as the audit log records it. It never
// holds a secret.
type Event struct {
	Time   time.Time
	Actor  Actor
	Action string
	Device DeviceID
	Reason string
	Ticket string
	Detail map[string]string
}

// AuditRecord is an Event in the chain: each record commits to the previous
// record's hash, so editing, inserting or removing a record breaks every hash
// after it.
type AuditRecord struct {
	Seq int64
	Event
	PrevHash string
	Hash     string
}

// GenesisHash is the PrevHash of the first record.
var GenesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// canonicalEvent is the hashed form. Field order is fixed by the struct and
// Detail keys are sorted by encoding/json, so every backend hashes the same
// bytes. Times are UTC with microsecond precision, what every store keeps.
type canonicalEvent struct {
	Seq    int64             `json:"seq"`
	Time   string            `json:"time"`
	Actor  string            `json:"actor"`
	Name   string            `json:"actor_name"`
	Action string            `json:"action"`
	Device string            `json:"device"`
	Reason string            `json:"reason"`
	Ticket string            `json:"ticket"`
	Detail map[string]string `json:"detail"`
	Prev   string            `json:"prev"`
}

// AuditTime normalises a time to what the chain hashes and stores keep.
func AuditTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// ChainHash is the hash of record seq holding e after prevHash.
func ChainHash(prevHash string, seq int64, e Event) string {
	d := e.Detail
	if d == nil {
		d = map[string]string{}
	}
	b, err := json.Marshal(canonicalEvent{
		Seq: seq, Time: AuditTime(e.Time).Format(time.RFC3339Nano), Actor: e.Actor.String(), Name: e.Actor.Name,
		Action: e.Action, Device: string(e.Device), Reason: e.Reason, Ticket: e.Ticket, Detail: d, Prev: prevHash,
	})
	if err != nil {
		panic(err) // strings and maps of strings always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// NextRecord builds the record that follows head (nil for the first record).
// Stores call it inside the transaction that appends.
func NextRecord(head *AuditRecord, e Event) AuditRecord {
	prev, seq := GenesisHash, int64(1)
	if head != nil {
		prev, seq = head.Hash, head.Seq+1
	}
	e.Time = AuditTime(e.Time)
	return AuditRecord{Seq: seq, Event: e, PrevHash: prev, Hash: ChainHash(prev, seq, e)}
}

// Checkpoint is a signed statement that the chain had a given hash at a
// given record. Without the signing key (kept in the SecretStore) a rewritten
// chain cannot carry valid checkpoints.
type Checkpoint struct {
	Seq       int64
	Hash      string
	Time      time.Time
	KeyID     string // hex SHA-256 of the public key, first 16 bytes
	Signature []byte
}

func (c Checkpoint) signed() []byte {
	return []byte("fvescrow audit checkpoint v1\n" + strconv.FormatInt(c.Seq, 10) + "\n" + c.Hash + "\n" + AuditTime(c.Time).Format(time.RFC3339Nano))
}

// KeyID names an audit public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}

// SignCheckpoint signs a checkpoint of record r.
func SignCheckpoint(priv ed25519.PrivateKey, r AuditRecord, at time.Time) Checkpoint {
	c := Checkpoint{Seq: r.Seq, Hash: r.Hash, Time: AuditTime(at), KeyID: KeyID(priv.Public().(ed25519.PublicKey))}
	c.Signature = ed25519.Sign(priv, c.signed())
	return c
}

// Verify checks the signature.
func (c Checkpoint) Verify(pub ed25519.PublicKey) bool {
	return len(c.Signature) == ed25519.SignatureSize && ed25519.Verify(pub, c.signed(), c.Signature)
}

// ChainVerifier walks records in order and reports the first one that does
// not fit. It holds no database: feed it from a store or an export file.
type ChainVerifier struct {
	pub         ed25519.PublicKey
	checkpoints map[int64]Checkpoint
	last        *AuditRecord
	Records     int64
	Verified    int // checkpoints whose signature and hash matched
	Unsigned    int // checkpoints not signed by pub
}

// NewChainVerifier verifies against checkpoints signed by pub (nil skips
// signature checks but still matches checkpoint hashes).
func NewChainVerifier(pub ed25519.PublicKey, cps []Checkpoint) *ChainVerifier {
	m := make(map[int64]Checkpoint, len(cps))
	for _, c := range cps {
		m[c.Seq] = c
	}
	return &ChainVerifier{pub: pub, checkpoints: m}
}

// BrokenError names the first record that breaks the chain.
type BrokenError struct {
	Seq    int64
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("audit record %d: %s", e.Seq, e.Reason) }

// Add checks the next record.
func (v *ChainVerifier) Add(r AuditRecord) error {
	wantSeq, wantPrev := int64(1), GenesisHash
	if v.last != nil {
		wantSeq, wantPrev = v.last.Seq+1, v.last.Hash
	}
	switch {
	case r.Seq != wantSeq:
		return &BrokenError{Seq: wantSeq, Reason: fmt.Sprintf("missing (next record present is %d)", r.Seq)}
	case r.PrevHash != wantPrev:
		return &BrokenError{Seq: r.Seq, Reason: "previous-hash link does not match the record before it"}
	case ChainHash(r.PrevHash, r.Seq, r.Event) != r.Hash:
		return &BrokenError{Seq: r.Seq, Reason: "content does not match its hash (edited)"}
	}
	if c, ok := v.checkpoints[r.Seq]; ok {
		if c.Hash != r.Hash {
			return &BrokenError{Seq: r.Seq, Reason: "hash differs from the signed checkpoint"}
		}
		switch {
		case v.pub == nil:
		case c.Verify(v.pub):
			v.Verified++
		default:
			v.Unsigned++
			return &BrokenError{Seq: r.Seq, Reason: "checkpoint signature does not verify with the audit public key"}
		}
	}
	rc := r
	v.last = &rc
	v.Records++
	return nil
}

// Finish reports checkpoints past the end of the chain (records removed from
// the tail).
func (v *ChainVerifier) Finish() error {
	var head int64
	if v.last != nil {
		head = v.last.Seq
	}
	for seq := range v.checkpoints {
		if seq > head {
			return &BrokenError{Seq: head + 1, Reason: fmt.Sprintf("records missing: a signed checkpoint covers record %d", seq)}
		}
	}
	return nil
}

// Head is the last verified record.
func (v *ChainVerifier) Head() *AuditRecord { return v.last }
