package fde

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// MaxCMSSize bounds an FDE_PersonalRecoveryKeyCMS blob. A real one is under
// 2 KiB even with a 4096-bit key.
const MaxCMSSize = 64 << 10

// Errors of the CMS path. None of them carries plaintext.
var (
	// ErrMalformedCMS: the bytes are not a CMS EnvelopedData fvescrow can read.
	ErrMalformedCMS = errors.New("malformed CMS")
	// ErrUnsupportedCMS: well-formed, but uses an algorithm or recipient form
	// fvescrow does not decrypt.
	ErrUnsupportedCMS = errors.New("unsupported CMS")
	// ErrNoRecipient: no identity in the keyring matches any recipient.
	// The concrete error is a *NoRecipientError naming the recipients.
	ErrNoRecipient = errors.New("no escrow identity matches the blob's recipient")
	// ErrDecrypt: an identity matched but decryption failed (corrupt blob, or
	// a key that does not belong to the certificate).
	ErrDecrypt = errors.New("decryption failed")
)

// Object identifiers fvescrow reads in EnvelopedData.
var (
	oidEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidRSA           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAOAEP       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidDESEDE3CBC    = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
	oidAES128CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
)

type contentCipher struct {
	name      string
	blockSize int
}

var contentCiphers = []struct {
	oid asn1.ObjectIdentifier
	contentCipher
}{
	{oidDESEDE3CBC, contentCipher{"des-ede3-cbc", 8}},
	{oidAES128CBC, contentCipher{"aes-128-cbc", 16}},
	{oidAES256CBC, contentCipher{"aes-256-cbc", 16}},
}

// Recipient identifies the certificate a blob was encrypted to.
type Recipient struct {
	Issuer       string   // issuer DN (RFC 2253 form), empty for a key-identifier recipient
	Serial       *big.Int // certificate serial number, nil for a key-identifier recipient
	SubjectKeyID []byte   // set instead of Issuer/Serial by v2 recipients
	KeyTransport string   // "rsaEncryption", "rsaesOaep" or the OID
	rawIssuer    []byte
}

// String names the recipient the way an admin compares it with
// `openssl x509 -noout -issuer -serial`.
func (r Recipient) String() string {
	if r.Serial == nil {
		return fmt.Sprintf("subject key identifier %s", strings.ToUpper(hex.EncodeToString(r.SubjectKeyID)))
	}
	return fmt.Sprintf("issuer %q serial %s", r.Issuer, SerialString(r.Serial))
}

// SerialString formats a serial as upper-case hex, as openssl prints it.
func SerialString(s *big.Int) string {
	if s == nil {
		return ""
	}
	h := strings.ToUpper(s.Text(16))
	if len(h)%2 == 1 {
		h = "0" + h
	}
	return h
}

// NoRecipientError names every recipient of a blob no identity could open.
type NoRecipientError struct {
	Recipients []Recipient
}

func (e *NoRecipientError) Error() string {
	names := make([]string, len(e.Recipients))
	for i, r := range e.Recipients {
		names[i] = r.String()
	}
	return fmt.Sprintf("%v: blob is encrypted to %s", ErrNoRecipient, strings.Join(names, "; "))
}

func (e *NoRecipientError) Is(target error) bool { return target == ErrNoRecipient }

// Envelope is a parsed, structurally checked EnvelopedData.
type Envelope struct {
	Recipients    []Recipient
	ContentCipher string // e.g. "des-ede3-cbc"
	der           []byte
}

type asnContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type asnEnvelopedData struct {
	Version              int
	OriginatorInfo       asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos       []asn1.RawValue `asn1:"set"`
	EncryptedContentInfo asnEncryptedContentInfo
	UnprotectedAttrs     asn1.RawValue `asn1:"optional,tag:1"`
}

type asnEncryptedContentInfo struct {
	ContentType      asn1.ObjectIdentifier
	Algorithm        pkix.AlgorithmIdentifier
	EncryptedContent asn1.RawValue `asn1:"optional,tag:0"`
}

type asnKeyTransRecipient struct {
	Version                int
	RID                    asn1.RawValue
	KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedKey           []byte
}

type asnIssuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

// ParseEnvelope reads a CMS EnvelopedData (BER or DER) and checks everything
// that can be checked without a private key: recipients, key transport and
// content cipher, IV and ciphertext sizes.
func ParseEnvelope(blob []byte) (*Envelope, error) {
	if len(blob) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrMalformedCMS)
	}
	if len(blob) > MaxCMSSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrMalformedCMS, len(blob), MaxCMSSize)
	}
	der, err := berToDER(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCMS, err)
	}
	var ci asnContentInfo
	if err := unmarshalAll(der, &ci); err != nil {
		return nil, fmt.Errorf("%w: content info: %v", ErrMalformedCMS, err)
	}
	if !ci.ContentType.Equal(oidEnvelopedData) {
		return nil, fmt.Errorf("%w: content type %v is not enveloped data", ErrMalformedCMS, ci.ContentType)
	}
	var ed asnEnvelopedData
	if err := unmarshalAll(ci.Content.Bytes, &ed); err != nil {
		return nil, fmt.Errorf("%w: enveloped data: %v", ErrMalformedCMS, err)
	}
	if len(ed.RecipientInfos) == 0 {
		return nil, fmt.Errorf("%w: no recipients", ErrMalformedCMS)
	}
	env := &Envelope{der: der}
	for i, raw := range ed.RecipientInfos {
		r, err := parseRecipient(raw)
		if err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i, err)
		}
		env.Recipients = append(env.Recipients, r)
	}
	cc, err := checkContent(ed.EncryptedContentInfo)
	if err != nil {
		return nil, err
	}
	env.ContentCipher = cc.name
	return env, nil
}

func parseRecipient(raw asn1.RawValue) (Recipient, error) {
	if raw.Class != asn1.ClassUniversal || raw.Tag != asn1.TagSequence {
		return Recipient{}, fmt.Errorf("%w: only key transport recipients are supported (got [%d])", ErrUnsupportedCMS, raw.Tag)
	}
	var kt asnKeyTransRecipient
	if err := unmarshalAll(raw.FullBytes, &kt); err != nil {
		return Recipient{}, fmt.Errorf("%w: key transport recipient: %v", ErrMalformedCMS, err)
	}
	var r Recipient
	switch alg := kt.KeyEncryptionAlgorithm.Algorithm; {
	case alg.Equal(oidRSA):
		r.KeyTransport = "rsaEncryption"
	case alg.Equal(oidRSAOAEP):
		r.KeyTransport = "rsaesOaep"
	default:
		r.KeyTransport = alg.String()
	}
	switch {
	case kt.RID.Class == asn1.ClassUniversal && kt.RID.Tag == asn1.TagSequence:
		var ias asnIssuerAndSerial
		if err := unmarshalAll(kt.RID.FullBytes, &ias); err != nil || ias.Serial == nil {
			return Recipient{}, fmt.Errorf("%w: issuer and serial: %v", ErrMalformedCMS, err)
		}
		var rdn pkix.RDNSequence
		if err := unmarshalAll(ias.Issuer.FullBytes, &rdn); err != nil {
			return Recipient{}, fmt.Errorf("%w: issuer name: %v", ErrMalformedCMS, err)
		}
		var name pkix.Name
		name.FillFromRDNSequence(&rdn)
		r.Issuer, r.Serial, r.rawIssuer = name.String(), ias.Serial, ias.Issuer.FullBytes
	case kt.RID.Class == asn1.ClassContextSpecific && kt.RID.Tag == 0 && !kt.RID.IsCompound:
		r.SubjectKeyID = kt.RID.Bytes
	default:
		return Recipient{}, fmt.Errorf("%w: recipient identifier", ErrMalformedCMS)
	}
	if len(kt.EncryptedKey) == 0 {
		return Recipient{}, fmt.Errorf("%w: empty encrypted key", ErrMalformedCMS)
	}
	return r, nil
}

// checkContent validates what smallstep/pkcs7 would otherwise panic on:
// cipher.CryptBlocks panics on a ciphertext that is not whole blocks.
func checkContent(eci asnEncryptedContentInfo) (contentCipher, error) {
	var cc contentCipher
	for _, c := range contentCiphers {
		if eci.Algorithm.Algorithm.Equal(c.oid) {
			cc = c.contentCipher
		}
	}
	if cc.name == "" {
		return cc, fmt.Errorf("%w: content cipher %v (want 3DES-CBC or AES-128/256-CBC)", ErrUnsupportedCMS, eci.Algorithm.Algorithm)
	}
	var iv []byte
	if rest, err := asn1.Unmarshal(eci.Algorithm.Parameters.FullBytes, &iv); err != nil || len(rest) != 0 || len(iv) != cc.blockSize {
		return cc, fmt.Errorf("%w: %s needs a %d byte IV", ErrMalformedCMS, cc.name, cc.blockSize)
	}
	ec := eci.EncryptedContent
	if ec.Class != asn1.ClassContextSpecific || ec.Tag != 0 {
		return cc, fmt.Errorf("%w: no encrypted content", ErrMalformedCMS)
	}
	n := len(ec.Bytes)
	if ec.IsCompound {
		n = 0
		for b := ec.Bytes; len(b) > 0; {
			var part asn1.RawValue
			rest, err := asn1.Unmarshal(b, &part)
			if err != nil || part.Class != asn1.ClassUniversal || part.Tag != asn1.TagOctetString || part.IsCompound {
				return cc, fmt.Errorf("%w: encrypted content chunks", ErrMalformedCMS)
			}
			n += len(part.Bytes)
			b = rest
		}
	}
	if n == 0 || n%cc.blockSize != 0 {
		return cc, fmt.Errorf("%w: ciphertext of %d bytes is not whole %s blocks", ErrMalformedCMS, n, cc.name)
	}
	return cc, nil
}

func unmarshalAll(b []byte, v any) error {
	rest, err := asn1.Unmarshal(b, v)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d trailing bytes", len(rest))
	}
	return nil
}
