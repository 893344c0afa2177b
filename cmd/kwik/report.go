package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/kwik-go/kwik"
)

// printPaths writes what each path of a client session brought in elapsed: bytes, share,
// throughput and round-trip time.
func printPaths(w io.Writer, stats kwik.SessionStats, elapsed time.Duration) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\taddress\trole\tstatus\treceived\tshare\tMbit/s\tRTT\t")
	for _, p := range stats.Paths {
		role := "secondary"
		if p.IsPrimary {
			role = "primary"
		}
		share := 0.0
		if stats.BytesReceived > 0 {
			share = 100 * float64(p.BytesReceived) / float64(stats.BytesReceived)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%.1f MiB\t%.1f%%\t%.1f\t%v\t\n", p.PathID, p.Address, role, p.Status,
			float64(p.BytesReceived)/(1<<20), share,
			float64(p.BytesReceived)*8/elapsed.Seconds()/1e6, p.QUIC.SmoothedRTT.Round(100*time.Microsecond))
	}
	tw.Flush()
}
