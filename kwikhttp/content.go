package kwikhttp

import (
	"io"
	"net/http"
	"time"
)

// ServeContent is http.ServeContent for content of a known size read at offsets (a file, an
// object in memory or in a store): it answers conditional and Range requests the same way,
// and on a kwikhttp primary a large body is fanned out over the session's secondaries, whose
// handlers serve the same content under the same URL. Fan-out needs a validator: an ETag the
// caller sets in w.Header(), or a non-zero modtime.
func ServeContent(w http.ResponseWriter, r *http.Request, name string, modtime time.Time, content io.ReaderAt, size int64) {
	http.ServeContent(w, r, name, modtime, io.NewSectionReader(content, 0, size))
}
