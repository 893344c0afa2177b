package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/kwik-go/kwik"
)

type getOptions struct {
	output     string
	resume     bool
	caFile     string
	pins       []string
	serverName string
	noProgress bool
	verbose    bool
}

func getCommand() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get [flags] PRIMARY-ADDRESS NAME",
		Short: "Download a file from a kwik serve primary (and its secondaries)",
		Long: `get downloads the file NAME from the primary at PRIMARY-ADDRESS, which has its secondaries
send parts of it, shows the progress and then what each path brought, and checks the size.

Trust: --ca (a PEM file of trusted certificates, such as the servers' own), or --pin with the
SHA-256 fingerprint of every server's certificate (as kwik serve prints it), or else the
system's roots. --resume continues a partial output file.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd.Context(), o, args[0], args[1], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", "output file (default: NAME's last element)")
	f.BoolVarP(&o.resume, "resume", "c", false, "continue a partial output file")
	f.StringVar(&o.caFile, "ca", "", "PEM file of trusted certificates")
	f.StringSliceVar(&o.pins, "pin", nil, "SHA-256 fingerprints of the servers' certificates")
	f.StringVar(&o.serverName, "server-name", "", "TLS server name (default: each address's host)")
	f.BoolVar(&o.noProgress, "no-progress", false, "no progress bar")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log paths and delegations")
	return cmd
}

func runGet(ctx context.Context, o getOptions, addr, name string, stdout, stderr io.Writer) error {
	name, err := cleanName(name)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if o.output == "" {
		o.output = path.Base(name)
	}
	tlsConf, err := clientTLS(o.caFile, o.pins, o.serverName)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	flags := os.O_WRONLY | os.O_CREATE
	if !o.resume {
		flags |= os.O_TRUNC
	}
	out, err := os.OpenFile(o.output, flags, 0o644)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer out.Close()
	offset, err := out.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}

	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	conf := &kwik.Config{Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	sess, err := kwik.Dial(ctx, addr, tlsConf, conf)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	defer sess.Close()
	st, err := sess.OpenStreamSync(ctx)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if _, err := io.WriteString(st, getRequest{offset: offset, name: name}.String()); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	st.Close()
	line, err := readLine(st)
	if err != nil {
		return fmt.Errorf("get: reading the answer: %w", err)
	}
	size, err := parseResponse(line)
	if err != nil {
		return fmt.Errorf("get: %s: %w", name, err)
	}

	var progress *mpb.Progress
	var bar *mpb.Bar
	if !o.noProgress && size > offset {
		progress = mpb.NewWithContext(ctx, mpb.WithOutput(stderr), mpb.WithWidth(48))
		bar = progress.AddBar(size,
			mpb.PrependDecorators(decor.Name(path.Base(name)+" "), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")),
		)
		bar.SetCurrent(offset)
	}
	start := time.Now()
	got, err := io.Copy(out, progressReader{st, bar})
	elapsed := time.Since(start)
	if progress != nil {
		if offset+got != size {
			bar.Abort(false) // or Wait would wait for the rest
		}
		progress.Wait()
	}
	if err != nil {
		return fmt.Errorf("get: after %d bytes: %w", offset+got, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("get: %w", err)
	}
	fi, err := os.Stat(o.output)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if offset+got != size || fi.Size() != size {
		return fmt.Errorf("get: %s has %d bytes, the server's file %d", o.output, fi.Size(), size)
	}
	printPaths(stdout, sess.Stats(), elapsed)
	mbit := float64(got) * 8 / elapsed.Seconds() / 1e6
	fmt.Fprintf(stdout, "\n%s: %d bytes (%d this time) in %v = %.1f Mbit/s, size checked\n",
		o.output, size, got, elapsed.Round(time.Millisecond), mbit)
	return nil
}

// progressReader moves bar as bytes are read.
type progressReader struct {
	r   io.Reader
	bar *mpb.Bar
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if p.bar != nil {
		p.bar.IncrBy(n)
	}
	return n, err
}
