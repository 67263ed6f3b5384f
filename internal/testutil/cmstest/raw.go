package cmstest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"testing"
)

// EnvelopeWithRawContent builds a DER EnvelopedData whose AES-256-CBC content
// decrypts to exactly raw (a whole number of blocks, no padding added), so a
// test can hand the decryptor invalid padding that only a key holder would
// otherwise see.
func EnvelopeWithRawContent(t testing.TB, cert *x509.Certificate, raw []byte) []byte {
	t.Helper()
	if len(raw)%aes.BlockSize != 0 {
		t.Fatalf("raw content must be whole AES blocks, got %d bytes", len(raw))
	}
	key := make([]byte, 32)
	iv := make([]byte, aes.BlockSize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(iv); err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	ct := make([]byte, len(raw))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, raw)
	//lint:ignore SA1019 Macs use PKCS#1 v1.5 key transport; the test makes the same shape.
	ek, err := rsa.EncryptPKCS1v15(rand.Reader, cert.PublicKey.(*rsa.PublicKey), key)
	if err != nil {
		t.Fatal(err)
	}
	ivDER, _ := asn1.Marshal(iv)
	type issuerAndSerial struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
	type ktri struct {
		Version int
		IAS     issuerAndSerial
		Alg     pkix.AlgorithmIdentifier
		EK      []byte
	}
	type eci struct {
		Type    asn1.ObjectIdentifier
		Alg     pkix.AlgorithmIdentifier
		Content asn1.RawValue `asn1:"tag:0,optional"`
	}
	type enveloped struct {
		Version    int
		Recipients []ktri `asn1:"set"`
		ECI        eci
	}
	type contentInfo struct {
		Type    asn1.ObjectIdentifier
		Content asn1.RawValue `asn1:"explicit,tag:0"`
	}
	ed, err := asn1.Marshal(enveloped{
		Recipients: []ktri{{
			IAS: issuerAndSerial{Issuer: asn1.RawValue{FullBytes: cert.RawIssuer}, Serial: cert.SerialNumber},
			Alg: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}, Parameters: asn1.NullRawValue},
			EK:  ek,
		}},
		ECI: eci{
			Type:    asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1},
			Alg:     pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}, Parameters: asn1.RawValue{FullBytes: ivDER}},
			Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: ct},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := asn1.Marshal(contentInfo{
		Type:    asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3},
		Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: ed},
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
