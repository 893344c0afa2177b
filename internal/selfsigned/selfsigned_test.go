package selfsigned

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/kwik-go/kwik/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// A generated certificate survives PEM, verifies for its names and addresses and no others,
// and its fingerprint is stable.
func TestCertificate(t *testing.T) {
	cert, err := Certificate([]string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := PEM(cert)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Fingerprint(loaded.Certificate[0]), Fingerprint(cert.Certificate[0]); got != want || len(got) != 64 {
		t.Fatalf("fingerprint %s after PEM, %s before", got, want)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)
	for name, ok := range map[string]bool{"localhost": true, "127.0.0.1": true, "example.com": false, "127.0.0.2": false} {
		_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots})
		if (err == nil) != ok {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, _, err := PEM(tls.Certificate{}); err == nil {
		t.Error("PEM of an empty certificate")
	}
}
