// Command prometheus is a runnable example of dlockotel: a service whose
// workers contend for one hot key, with its lock metrics exported to
// Prometheus through the official OpenTelemetry exporter.
//
//	go run ./example/prometheus -url redis://127.0.0.1:6379 &
//	curl -s localhost:9464/metrics | grep dlock_
//
// Each worker takes the key, holds it for -hold and lets it go, in a loop;
// dlock_acquire_duration_seconds shows how long they wait for it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dlock-go/dlock"
	"github.com/dlock-go/dlock/dlockotel"
	_ "github.com/dlock-go/dlock/etcddlock"
	_ "github.com/dlock-go/dlock/mysqldlock"
	_ "github.com/dlock-go/dlock/pgdlock"
	_ "github.com/dlock-go/dlock/redisdlock"
	_ "github.com/dlock-go/dlock/sqlitedlock"
	_ "github.com/dlock-go/dlock/zkdlock"
)

func main() {
	url := flag.String("url", "sqlite://"+filepath.Join(os.TempDir(), "dlockotel-example.db"), "backend URL")
	listen := flag.String("listen", "127.0.0.1:9464", "address of the /metrics endpoint")
	workers := flag.Int("workers", 8, "workers contending for the key")
	hold := flag.Duration("hold", 5*time.Millisecond, "how long a worker holds the key")
	key := flag.String("key", "example/hot", "the contended key")
	flag.Parse()
	if err := run(*url, *listen, *key, *workers, *hold); err != nil {
		log.Fatal(err)
	}
}

func run(url, listen, key string, workers int, hold time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// The OpenTelemetry side: a MeterProvider whose reader is the
	// Prometheus exporter, served on /metrics.
	exporter, err := prometheus.New()
	if err != nil {
		return err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(context.Background())
	m, err := dlockotel.NewMetrics(dlockotel.WithMeterProvider(mp))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Print(err)
			stop()
		}
	}()
	defer srv.Close()
	fmt.Printf("metrics on http://%s/metrics\n", listen)

	// The service: one Client per worker, as separate processes would have.
	var wg sync.WaitGroup
	for range workers {
		c, err := dlock.Open(ctx, url, m.Option())
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				l, err := c.Lock(ctx, key)
				if err != nil {
					continue
				}
				time.Sleep(hold)
				_ = l.Unlock(context.WithoutCancel(ctx))
			}
		}()
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}
