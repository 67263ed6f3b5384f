package fakemac

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"time"

	"github.com/micromdm/scep/v2/cryptoutil/x509util"
	"github.com/micromdm/scep/v2/scep"
)

// scepEnroll gets a device identity the way macOS does: GetCACert, a CSR
// carrying the challenge, PKCSReq signed by a temporary self-signed
// certificate, and the CertRep decrypted with the same key.
func scepEnroll(ctx context.Context, client *http.Client, scepURL, cn, challenge string, bits int) (*rsa.PrivateKey, *x509.Certificate, error) {
	caBytes, err := get(ctx, client, scepURL+"?operation=GetCACert")
	if err != nil {
		return nil, nil, fmt.Errorf("GetCACert: %w", err)
	}
	caCerts, err := x509.ParseCertificates(caBytes)
	if err != nil {
		if caCerts, err = scep.CACerts(caBytes); err != nil {
			return nil, nil, fmt.Errorf("GetCACert: %w", err)
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err := x509util.CreateCertificateRequest(rand.Reader, &x509util.CertificateRequest{
		CertificateRequest: x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}},
		ChallengePassword:  challenge,
	}, key)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "SCEP SIGNER"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	selfDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	self, err := x509.ParseCertificate(selfDER)
	if err != nil {
		return nil, nil, err
	}
	msg, err := scep.NewCSRRequest(csr, &scep.PKIMessage{MessageType: scep.PKCSReq, Recipients: caCerts, SignerKey: key, SignerCert: self})
	if err != nil {
		return nil, nil, err
	}
	respBytes, err := post(ctx, client, scepURL+"?operation=PKIOperation", msg.Raw)
	if err != nil {
		return nil, nil, fmt.Errorf("PKIOperation: %w", err)
	}
	resp, err := scep.ParsePKIMessage(respBytes, scep.WithCACerts(caCerts))
	if err != nil {
		return nil, nil, err
	}
	if resp.PKIStatus != scep.SUCCESS {
		return nil, nil, fmt.Errorf("SCEP refused: status %s failInfo %s", resp.PKIStatus, resp.FailInfo)
	}
	if err := resp.DecryptPKIEnvelope(self, key); err != nil {
		return nil, nil, err
	}
	return key, resp.CertRepMessage.Certificate, nil
}

func get(ctx context.Context, c *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func post(ctx context.Context, c *http.Client, u string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	return do(c, req)
}

func do(c *http.Client, req *http.Request) ([]byte, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &HTTPError{Status: resp.StatusCode, URL: redact(req.URL)}
	}
	return b, nil
}

// HTTPError is a non-200 answer from the server.
type HTTPError struct {
	Status int
	URL    string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("HTTP %d from %s", e.Status, e.URL) }

func redact(u *url.URL) string { c := *u; c.RawQuery = ""; return c.String() }
