// pause is the sandbox ("infra") container of every pod: it holds the pod's namespaces and
// does nothing else. It sleeps until SIGTERM or SIGINT and then exits 0. As PID 1 of the pod
// it also reaps zombies (SIGCHLD), like the upstream pause program.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}
