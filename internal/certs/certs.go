// Package certs serves TLS certificates from files and reads them again
// when they change, so that a renewed certificate (or client CA bundle) is
// picked up without a restart. The node's wss:// listener and the
// directory's HTTPS listener use it.
//
// A Reloader is safe for concurrent use: its tls.Config is shared by every
// handshake.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of a TLS server.
type Files struct {
	// CertFile is the certificate chain, KeyFile its private key. Both
	// required.
	CertFile, KeyFile string
	// ClientCAFile, when set, is the bundle of CAs that sign client
	// certificates, which are then asked for (ClientAuth says how firmly).
	ClientCAFile string
	// ClientAuth applies with ClientCAFile. Default
	// tls.VerifyClientCertIfGiven.
	ClientAuth tls.ClientAuthType
	// NextProtos are the ALPN protocols offered. Default: none.
	NextProtos []string
}

// CheckEvery is how often, at most, the files are looked at again (a stat
// each), on the handshakes that follow.
const CheckEvery = time.Second

// Reloader serves the certificate of Files, read again when a file's size
// or modification time changes. A file that fails to load leaves the
// previous certificate in use (and is logged); it is tried again at the
// next check.
type Reloader struct {
	files Files
	log   *slog.Logger

	mu      sync.Mutex
	checked time.Time
	stamps  [3]stamp
	conf    *tls.Config
	loads   int
}

type stamp struct {
	size int64
	mod  time.Time
}

// ErrNoCert is returned for Files without a certificate or key.
var ErrNoCert = errors.New("certs: cert_file and key_file are required")

// New loads the files once; it fails when they do not load.
func New(f Files, log *slog.Logger) (*Reloader, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, ErrNoCert
	}
	if log == nil {
		log = slog.Default()
	}
	r := &Reloader{files: f, log: log}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	conf, err := r.load()
	if err != nil {
		return nil, err
	}
	r.conf, r.stamps, r.checked, r.loads = conf, st, time.Now(), 1
	return r, nil
}

// Config returns the tls.Config to serve with: every handshake gets the
// current certificate.
func (r *Reloader) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         r.files.NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return r.current(), nil },
	}
}

// Loads returns how many times the files were loaded (1 after New).
func (r *Reloader) Loads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loads
}

// Leaf returns the current certificate's leaf.
func (r *Reloader) Leaf() *x509.Certificate {
	c := r.current()
	if len(c.Certificates) == 0 {
		return nil
	}
	return c.Certificates[0].Leaf
}

// current returns the config of the current certificate, reloading the
// files first when they changed.
func (r *Reloader) current() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < CheckEvery {
		return r.conf
	}
	r.checked = now
	st, err := r.stat()
	if err != nil {
		r.log.Warn("TLS files unreadable; keeping the loaded certificate", "err", err)
		return r.conf
	}
	if st == r.stamps {
		return r.conf
	}
	conf, err := r.load()
	if err != nil {
		// Often a renewal caught halfway (the certificate written, not yet
		// the key): try again at the next check.
		r.log.Warn("TLS files changed but do not load; keeping the loaded certificate", "err", err)
		return r.conf
	}
	r.conf, r.stamps = conf, st
	r.loads++
	r.log.Info("TLS certificate reloaded", "cert_file", r.files.CertFile, "not_after", conf.Certificates[0].Leaf.NotAfter)
	return r.conf
}

func (r *Reloader) stat() ([3]stamp, error) {
	var st [3]stamp
	for i, name := range []string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			return st, fmt.Errorf("certs: %w", err)
		}
		st[i] = stamp{size: fi.Size(), mod: fi.ModTime()}
	}
	return st, nil
}

func (r *Reloader) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %s, %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   r.files.NextProtos,
	}
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: %s holds no PEM certificate", r.files.ClientCAFile)
		}
		conf.ClientCAs = pool
		conf.ClientAuth = r.files.ClientAuth
		if conf.ClientAuth == tls.NoClientCert {
			conf.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	return conf, nil
}

// ClientConfig builds a client tls.Config from PEM files: caFile (the CAs
// to trust; default the system's), and certFile with keyFile for a client
// certificate (optional). serverName overrides the name checked.
func ClientConfig(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("certs: %s holds no PEM certificate", caFile)
		}
		conf.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("certs: a client certificate needs both cert_file and key_file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}
