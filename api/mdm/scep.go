package mdm

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"time"

	"github.com/fvescrow/fvescrow/escrow"
	"github.com/fvescrow/fvescrow/fde"
	"github.com/fvescrow/fvescrow/internal/logadapt"
	"github.com/micromdm/nanomdm/certverify"
	"github.com/micromdm/scep/v2/depot"
	"github.com/micromdm/scep/v2/scep"
	scepserver "github.com/micromdm/scep/v2/server"
)

// SettingSCEPCACert holds the SCEP CA certificate (PEM).
const SettingSCEPCACert = "scep.ca-cert"

var (
	scepCAKeyRef     = escrow.SecretRef{Kind: escrow.KindSCEPCAKey, Owner: "scep-ca"}
	scepChallengeRef = escrow.SecretRef{Kind: escrow.KindSCEPChallenge, Owner: "scep"}
)

// deviceCertValidity is how long an issued device identity lasts. Macs do
// not renew the MDM identity by themselves, so it is long; revocation is by
// retiring the device (certauth ties one certificate to one enrollment).
const deviceCertValidity = 5 * 365 * 24 * time.Hour

// SCEPCA is the CA that issues device identity certificates.
type SCEPCA struct {
	Cert *x509.Certificate
	key  fde.PrivateKey
}

// LoadOrCreateSCEPCA loads the SCEP CA, creating it on first start: the
// certificate in the settings, the key in the secret store.
func LoadOrCreateSCEPCA(ctx context.Context, secrets escrow.SecretStore, settings SettingKeeper, org string) (*SCEPCA, bool, error) {
	certPEM, err := settings.Setting(ctx, SettingSCEPCACert)
	if err == nil {
		certs, err := fde.ParseCertificatesPEM(certPEM)
		if err != nil {
			return nil, false, fmt.Errorf("scep CA certificate: %w", err)
		}
		keyPEM, _, err := secrets.Get(ctx, scepCAKeyRef, 0)
		if err != nil {
			return nil, false, fmt.Errorf("scep CA key: %w", err)
		}
		key, err := fde.ParsePrivateKeyPEM(keyPEM)
		clear(keyPEM)
		if err != nil || key.RSA() == nil {
			return nil, false, fmt.Errorf("scep CA key: %w", escrow.ErrInvalidKey)
		}
		return &SCEPCA{Cert: certs[0], key: key}, false, nil
	}
	if !errors.Is(err, escrow.ErrNotFound) {
		return nil, false, err
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, false, err
	}
	if org == "" {
		org = "fvescrow"
	}
	der, err := depot.NewCACert(depot.WithCommonName(org+" fvescrow device CA"), depot.WithOrganization(org),
		depot.WithCountry("US"), depot.WithYears(20)).SelfSign(rand.Reader, &rk.PublicKey, rk)
	if err != nil {
		return nil, false, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, false, err
	}
	key := fde.NewPrivateKey(rk)
	keyPEM, err := fde.EncodePrivateKeyPEM(key)
	if err != nil {
		return nil, false, err
	}
	defer clear(keyPEM)
	// Key first: a certificate without its key would be a broken CA.
	if _, err := secrets.Put(ctx, scepCAKeyRef, keyPEM, 0, escrow.SecretMeta{"kind": string(escrow.KindSCEPCAKey)}); err != nil {
		return nil, false, fmt.Errorf("store scep CA key: %w", err)
	}
	if err := settings.CreateSetting(ctx, SettingSCEPCACert, fde.EncodeCertificatePEM(cert)); err != nil {
		return nil, false, err
	}
	return &SCEPCA{Cert: cert, key: key}, true, nil
}

// LoadOrCreateChallenge returns the SCEP challenge password, creating a
// random one on first start. Every enrollment profile carries it.
func LoadOrCreateChallenge(ctx context.Context, secrets escrow.SecretStore) (string, error) {
	b, _, err := secrets.Get(ctx, scepChallengeRef, 0)
	if err == nil {
		return string(b), nil
	}
	if !errors.Is(err, escrow.ErrNotFound) {
		return "", err
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	c := base64.RawURLEncoding.EncodeToString(raw)
	if _, err := secrets.Put(ctx, scepChallengeRef, []byte(c), 0, escrow.SecretMeta{"kind": string(escrow.KindSCEPChallenge)}); err != nil {
		if errors.Is(err, escrow.ErrConflict) {
			return LoadOrCreateChallenge(ctx, secrets) // a concurrent first start won
		}
		return "", err
	}
	return c, nil
}

// Verifier checks that a device identity certificate chains to this CA and
// is for client authentication.
func (ca *SCEPCA) Verifier() (*certverify.PoolVerifier, error) {
	return certverify.NewPoolVerifier(fde.EncodeCertificatePEM(ca.Cert), nil, x509.ExtKeyUsageClientAuth)
}

// SignCSR issues a device identity certificate. It is stateless (random
// serials), so concurrent enrollments are safe, unlike scep's file depot.
func (ca *SCEPCA) SignCSR(m *scep.CSRReqMessage) (*x509.Certificate, error) {
	csr := m.CSR
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*rsa.PublicKey)
	if !ok || pub.N.BitLen() < 2048 {
		return nil, errors.New("csr: want an RSA key of at least 2048 bits")
	}
	if csr.Subject.CommonName == "" {
		return nil, errors.New("csr: empty common name")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: csr.Subject.CommonName, Organization: csr.Subject.Organization},
		NotBefore:    now.Add(-time.Hour), // device clocks drift
		NotAfter:     now.Add(deviceCertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key.Signer())
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Handler serves SCEP at /scep (GetCACaps, GetCACert, PKIOperation); a CSR
// must carry the challenge.
func (ca *SCEPCA) Handler(challenge string, log *slog.Logger) (http.Handler, error) {
	kit := logadapt.NewKit(log.With("component", "scep"))
	signer := scepserver.ChallengeMiddleware(challenge, scepserver.CSRSignerFunc(ca.SignCSR))
	svc, err := scepserver.NewService(ca.Cert, ca.key.RSA(), signer, scepserver.WithLogger(kit))
	if err != nil {
		return nil, err
	}
	h := scepserver.MakeHTTPHandler(scepserver.MakeServerEndpoints(svc), svc, kit)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The SCEP library answers a request without an operation with 500;
		// it is the client's mistake.
		if r.URL.Query().Get("operation") == "" {
			http.Error(w, "missing SCEP operation", http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, r)
	}), nil
}
