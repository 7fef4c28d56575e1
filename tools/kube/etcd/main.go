// Command etcd is the stock etcd server, built from go.etcd.io/etcd/server/v3
// so that the local control plane gets an etcd that matches what
// kube-apiserver v1.37 expects (Debian's etcd 3.4 breaks its watches).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
