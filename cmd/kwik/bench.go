package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kwik-go/kwik/internal/compare"
)

type benchOptions struct {
	scenarios []string
	sizeMiB   int
	streams   int
	sources   int
	rateMbit  int64
	delay     time.Duration
	multiMiB  int
	kill      bool
	count     int
	// soak
	sessions, soakStreams, soakKiB int
	// wan
	wanDelays []time.Duration
	wanMiB    int
	// http
	httpDelays []time.Duration
	httpMiB    int
}

// transferMaxStreams is the loopback pair's MaxIncomingStreams for transfers, as in the
// benchmarks.
const transferMaxStreams = 100

// benchScenarios are the scenario names --scenarios takes, in the order they run; soak and
// wan run only when asked for.
var benchScenarios = []string{"loopback", "small", "multisource", "soak", "wan", "http"}

func benchCommand() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Compare KWIK with raw quic-go: loopback transfers, small streams, multi-source download, WAN sweep",
		Long: `bench runs the scenarios of the repository's benchmarks (go test -bench .), with raw
quic-go and KWIK in turn in every repetition, and prints one row per scenario
(--scenarios loopback gives the download and upload rows):

  download, upload  one stream of --size MiB on loopback, in MB/s
  small             --streams concurrent streams of 1 KiB each way on loopback, in streams/s
  multisource       --multisource-size MiB that KWIK downloads from --sources servers (a
                    primary and its secondaries, with Fanout) and quic-go from one server, each
                    server behind its own emulated link of --rate Mbit/s; the ratio is
                    KWIK's speed-up
  soak              (only when named) --sessions clients at once, each downloading
                    --soak-streams streams of --soak-size KiB at once, from one quic-go server,
                    then from a KWIK primary and its secondary (Fanout); stream completion
                    percentiles, heap and goroutines per session
  wan               (only when named) the sweep of BenchmarkWAN, for each of --wan-delays
                    (one way): 32 MiB from 3x50 Mbit/s and from 80+20+20 Mbit/s (the primary
                    on the 80), 48 MiB from 1x200 Mbit/s (--wan-size overrides the sizes);
                    KWIK with its default configuration (Fanout from the primary and its
                    secondaries, each behind its own link) against quic-go over one link as
                    fast as the fastest server's (row wan:<links>/<delay>), and, with several
                    servers, against striping: a quic-go connection to each server, each
                    fetching an equal range at once (row wan:<links>/<delay>:striping, whose
                    quic-go column is striping's rate), and, with rates that differ, against
                    striping by rate: each range in proportion to its link's rate, known in
                    advance (row wan:<links>/<delay>:striping-by-rate)
  http              (only when named) the scenario of BenchmarkHTTPWAN, for each of
                    --http-delays: --http-size MiB (32) over HTTP from 3x50 Mbit/s links; an
                    http.Client with kwikhttp.Transport, from a kwikhttp primary and two
                    secondaries, against quic-go's http3 from one server (row
                    http:<links>/<delay>) and against striping Range GETs over an http3 server
                    behind each link (row http:<links>/<delay>:striping)

The KWIK/quic-go column is KWIK's speed over quic-go's (above 1: KWIK was faster). Figures
are over all --count repetitions. On a shared machine they are noisy; the ratio less so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBench(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.scenarios, "scenarios", benchScenarios[:3], "scenarios to run: loopback (download and upload), small, multisource, soak, wan, http")
	f.IntVar(&o.sizeMiB, "size", 64, "loopback transfer size in MiB")
	f.IntVar(&o.streams, "streams", 1000, "concurrent streams in the small-streams scenario")
	f.IntVar(&o.sources, "sources", 3, "KWIK servers in the multi-source scenario (the primary and its secondaries)")
	f.Int64Var(&o.rateMbit, "rate", 40, "rate of each server's link in the multi-source scenario, Mbit/s")
	f.DurationVar(&o.delay, "delay", 10*time.Millisecond, "one-way delay of each multi-source link")
	f.IntVar(&o.multiMiB, "multisource-size", 24, "multi-source download size in MiB")
	f.BoolVar(&o.kill, "kill", false, "blackhole the last secondary half way through the first multi-source download (it stays dead for later repetitions)")
	f.IntVar(&o.count, "count", 1, "repetitions of each scenario")
	f.IntVar(&o.sessions, "sessions", 500, "concurrent client sessions in the soak scenario")
	f.IntVar(&o.soakStreams, "soak-streams", 10, "concurrent streams per session in the soak scenario")
	f.IntVar(&o.soakKiB, "soak-size", 64, "bytes each soak stream downloads, in KiB")
	f.DurationSliceVar(&o.wanDelays, "wan-delays", compare.WANDelays, "one-way delays of the wan sweep")
	f.DurationSliceVar(&o.httpDelays, "http-delays", []time.Duration{10 * time.Millisecond, 40 * time.Millisecond}, "one-way delays of the http scenario")
	f.IntVar(&o.httpMiB, "http-size", 32, "download size of the http scenario in MiB (at least 2)")
	f.IntVar(&o.wanMiB, "wan-size", 0, "download size of every wan scenario in MiB; 0: the sweep's (32 MiB, 48 MiB from one server)")
	return cmd
}

// benchRow is one line of the table.
type benchRow struct {
	scenario   string
	unit       string
	kwik, quic float64
	ratio      float64
	setup      string
}

func runBench(ctx context.Context, out io.Writer, o benchOptions) error {
	for _, s := range o.scenarios {
		if !slices.Contains(benchScenarios, s) {
			return fmt.Errorf("bench: unknown scenario %q (have %s)", s, strings.Join(benchScenarios, ", "))
		}
	}
	switch {
	case o.sizeMiB <= 0, o.streams <= 0, o.sources <= 0, o.rateMbit <= 0, o.delay < 0, o.multiMiB <= 0, o.count <= 0,
		o.sessions <= 0, o.soakStreams <= 0, o.soakKiB <= 0, o.wanMiB < 0, len(o.wanDelays) == 0,
		o.httpMiB < 2, len(o.httpDelays) == 0:
		return fmt.Errorf("bench: sizes, streams, sources, rate, count and wan delays must be positive")
	case o.kill && o.sources < 2:
		return fmt.Errorf("bench: --kill needs --sources 2 or more")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	var rows []benchRow
	for _, s := range benchScenarios { // in a fixed order, whatever the flag's
		if !slices.Contains(o.scenarios, s) {
			continue
		}
		var (
			r   []benchRow
			err error
		)
		switch s {
		case "loopback":
			r, err = benchLoopback(ctx, o)
		case "small":
			r, err = benchSmall(ctx, o)
		case "multisource":
			r, err = benchMultiSource(ctx, o)
		case "soak":
			r, err = benchSoak(ctx, o)
		case "wan":
			r, err = benchWAN(ctx, o)
		case "http":
			r, err = benchHTTP(ctx, o)
		}
		if err != nil {
			return fmt.Errorf("bench: %s: %w", s, err)
		}
		rows = append(rows, r...)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tunit\tKWIK\tquic-go\tKWIK/quic-go\tsetup")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.2f\t%s\n", r.scenario, r.unit, r.kwik, r.quic, r.ratio, r.setup)
	}
	return tw.Flush()
}

func benchLoopback(ctx context.Context, o benchOptions) ([]benchRow, error) {
	l, err := compare.NewLoopback(ctx, transferMaxStreams)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var rows []benchRow
	for _, dir := range []compare.Direction{compare.Download, compare.Upload} {
		r, err := l.Transfer(ctx, dir, int64(o.sizeMiB)<<20, o.count)
		if err != nil {
			return nil, err
		}
		rows = append(rows, benchRow{
			scenario: dir.String(), unit: "MB/s",
			kwik: r.MBps(r.KWIK), quic: r.MBps(r.QUIC), ratio: r.Ratio(),
			setup: fmt.Sprintf("%d MiB, 1 stream, loopback; heap allocs/32 KiB %.1f (quic-go %.1f)",
				o.sizeMiB, r.AllocsPer32KiB(r.KWIKMallocs), r.AllocsPer32KiB(r.QUICMallocs)),
		})
	}
	return rows, nil
}

func benchSmall(ctx context.Context, o benchOptions) ([]benchRow, error) {
	l, err := compare.NewLoopback(ctx, o.streams)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	r, err := l.SmallStreams(ctx, o.streams, o.count)
	if err != nil {
		return nil, err
	}
	return []benchRow{{
		scenario: "small", unit: "streams/s",
		kwik: r.PerSecond(r.KWIK), quic: r.PerSecond(r.QUIC), ratio: r.Ratio(),
		setup: fmt.Sprintf("%d concurrent streams, 1 KiB each way, loopback", o.streams),
	}}, nil
}

func benchMultiSource(ctx context.Context, o benchOptions) ([]benchRow, error) {
	rates := make([]int64, o.sources)
	for i := range rates {
		rates[i] = o.rateMbit
	}
	m, err := compare.NewMultiSource(ctx, compare.MultiSourceConfig{
		Rates: rates, QUICRate: o.rateMbit, Delay: o.delay, Size: int64(o.multiMiB) << 20, Kill: o.kill,
	})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r, err := m.Run(ctx, o.count)
	if err != nil {
		return nil, err
	}
	setup := fmt.Sprintf("%d MiB, KWIK from %dx%d Mbit/s (%.0f%% of their sum), quic-go from 1x%d, %v one way; shares %s",
		o.multiMiB, o.sources, o.rateMbit, 100*r.OfLinksSum(), o.rateMbit, o.delay, r.SharesString())
	if o.kill {
		setup += fmt.Sprintf("; last secondary killed half way, longest stall %v", r.Stall.Round(time.Millisecond))
	}
	return []benchRow{{
		scenario: "multisource", unit: "Mbit/s",
		kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.QUIC), ratio: r.Ratio(),
		setup: setup,
	}}, nil
}

func benchSoak(ctx context.Context, o benchOptions) ([]benchRow, error) {
	r, err := compare.Soak(ctx, compare.SoakConfig{Sessions: o.sessions, Streams: o.soakStreams, StreamSize: int64(o.soakKiB) << 10})
	if err != nil {
		return nil, err
	}
	k, q := r.KWIK, r.QUIC
	return []benchRow{{
		scenario: "soak", unit: "Mbit/s",
		kwik: r.Mbps(k), quic: r.Mbps(q), ratio: r.Mbps(k) / r.Mbps(q),
		setup: fmt.Sprintf("%d sessions x %d streams x %d KiB (KWIK: primary + 1 secondary, which sent %.0f%%); "+
			"stream p50 %v / %v, p99 %v / %v; heap per session idle %.0f / %.0f KiB, peak %.0f / %.0f KiB; goroutines per session %.1f / %.1f (KWIK / quic-go)",
			o.sessions, o.soakStreams, o.soakKiB, 100*r.SecondaryShare,
			k.P50.Round(time.Millisecond), q.P50.Round(time.Millisecond), k.P99.Round(time.Millisecond), q.P99.Round(time.Millisecond),
			k.HeapIdle/1024, q.HeapIdle/1024, k.HeapPeak/1024, q.HeapPeak/1024, k.Goroutines, q.Goroutines),
	}}, nil
}

func benchWAN(ctx context.Context, o benchOptions) ([]benchRow, error) {
	var rows []benchRow
	for _, conf := range compare.WANSweep(o.wanDelays) {
		if o.wanMiB > 0 {
			conf.Size = int64(o.wanMiB) << 20
		}
		r, err := runWAN(ctx, conf, o.count)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", conf.Name(), err)
		}
		rows = append(rows, benchRow{
			scenario: "wan:" + conf.Name(), unit: "Mbit/s",
			kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.QUIC), ratio: r.Ratio(),
			setup: fmt.Sprintf("%d MiB, %v one way; KWIK (default config) from %s Mbit/s: %.0f%% of their sum, shares %s, "+
				"peak receive memory %.1f MiB; quic-go: 1 connection through one %d Mbit/s link",
				conf.Size>>20, conf.Delay, conf.Links(), 100*r.OfLinksSum(), r.SharesString(),
				float64(r.PeakReceiveBuffered)/(1<<20), slices.Max(conf.Rates)),
		})
		if r.Stripe > 0 {
			rows = append(rows, benchRow{
				scenario: "wan:" + conf.Name() + ":striping", unit: "Mbit/s",
				kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.Stripe), ratio: r.StripeRatio(),
				setup: fmt.Sprintf("quic-go column: striping, 1 quic-go connection to each of the %d servers, each fetching 1/%d of the object at once",
					len(conf.Rates), len(conf.Rates)),
			})
		}
		if r.RateStripe > 0 {
			rows = append(rows, benchRow{
				scenario: "wan:" + conf.Name() + ":striping-by-rate", unit: "Mbit/s",
				kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.RateStripe), ratio: r.RateStripeRatio(),
				setup: "quic-go column: striping with each server's range in proportion to its link's rate, known in advance (an oracle no client has)",
			})
		}
	}
	return rows, nil
}

func benchHTTP(ctx context.Context, o benchOptions) ([]benchRow, error) {
	var rows []benchRow
	for _, conf := range compare.HTTPSweep(o.httpDelays) {
		conf.Size = int64(o.httpMiB) << 20
		r, err := runHTTP(ctx, conf, o.count)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", conf.Name(), err)
		}
		rows = append(rows, benchRow{
			scenario: "http:" + conf.Name(), unit: "Mbit/s",
			kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.HTTP3), ratio: r.HTTP3.Seconds() / r.KWIK.Seconds(),
			setup: fmt.Sprintf("%d MiB over HTTP, %v one way; KWIK column: http.Client with kwikhttp.Transport, a primary and %d secondaries "+
				"(shares %s); quic-go column: quic-go's http3 from one server through one %d Mbit/s link",
				conf.Size>>20, conf.Delay, len(conf.Rates)-1, r.SharesString(), slices.Max(conf.Rates)),
		}, benchRow{
			scenario: "http:" + conf.Name() + ":striping", unit: "Mbit/s",
			kwik: r.Mbps(r.KWIK), quic: r.Mbps(r.Stripe), ratio: r.Stripe.Seconds() / r.KWIK.Seconds(),
			setup: fmt.Sprintf("quic-go column: striping, an http3 server behind each of the %d links, a Range GET of 1/%d of the object from each at once",
				len(conf.Rates), len(conf.Rates)),
		}, benchRow{
			scenario: "http:" + conf.Name() + ":striping:first", unit: "Mbit/s",
			kwik: mbps(conf.Size, r.First.KWIK), quic: mbps(conf.Size, r.First.Stripe), ratio: r.First.Stripe.Seconds() / r.First.KWIK.Seconds(),
			setup: "the first download each way, untimed above: fresh clients (handshakes, KWIK's secondaries joining), congestion windows at their start",
		})
	}
	return rows, nil
}

func runHTTP(ctx context.Context, conf compare.HTTPConfig, n int) (compare.HTTPResult, error) {
	h, err := compare.NewHTTP(ctx, conf)
	if err != nil {
		return compare.HTTPResult{}, err
	}
	defer h.Close()
	return h.Run(ctx, n)
}

func runWAN(ctx context.Context, conf compare.WANConfig, n int) (compare.WANResult, error) {
	w, err := compare.NewWAN(ctx, conf)
	if err != nil {
		return compare.WANResult{}, err
	}
	defer w.Close()
	return w.Run(ctx, n)
}

// mbps is the rate of size bytes in t, in Mbit/s.
func mbps(size int64, t time.Duration) float64 { return float64(size) * 8 / t.Seconds() / 1e6 }
