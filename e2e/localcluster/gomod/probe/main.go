// probe is the in-pod client of smoke-test.sh: a static binary (pure-Go resolver, so it
// honours the pod's resolv.conf search list like glibc) that checks what pods need.
//
//	probe lookup NAME...   resolve each name, print its addresses; fail if any does not resolve
//	probe get URL          HTTP(S) GET, print the body; fail unless 200
//	probe api              GET https://kubernetes.default.svc/version the way in-cluster config
//	                       does: service account token, CA bundle verified against the name
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "probe: "+format+"\n", a...)
	os.Exit(1)
}

func get(client *http.Client, url, token string) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fail("%v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		fail("GET %s: status %d", url, resp.StatusCode)
	}
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: probe lookup NAME... | get URL | api")
	}
	switch os.Args[1] {
	case "lookup":
		for _, name := range os.Args[2:] {
			addrs, err := net.LookupHost(name)
			if err != nil {
				fail("lookup %s: %v", name, err)
			}
			fmt.Printf("%s %s\n", name, strings.Join(addrs, " "))
		}
	case "get":
		get(&http.Client{Timeout: 10 * time.Second}, os.Args[2], "")
	case "api":
		token, err := os.ReadFile(saDir + "/token")
		if err != nil {
			fail("%v", err)
		}
		caPEM, err := os.ReadFile(saDir + "/ca.crt")
		if err != nil {
			fail("%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			fail("no certificate in %s/ca.crt", saDir)
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}}}
		host := os.Getenv("KUBERNETES_SERVICE_HOST")
		get(client, "https://"+net.JoinHostPort(host, os.Getenv("KUBERNETES_SERVICE_PORT"))+"/version", string(token))
		fmt.Println()
		get(client, "https://kubernetes.default.svc/version", string(token))
		fmt.Println()
	default:
		fail("unknown command %q", os.Args[1])
	}
}
