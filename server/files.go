package server

import (
	"net/http"
	"path"
	"strings"

	"github.com/sandbox-exec/pyexec/runner"
)

// fileBody is one output file in an answer: its content (base64 in JSON,
// bin in msgpack), size in bytes and media type.
type fileBody struct {
	Content   []byte `json:"content" msgpack:"content"`
	Size      int    `json:"size" msgpack:"size"`
	MediaType string `json:"media_type" msgpack:"media_type"`
}

// filesBody maps the output files by name; nil (left out of the answer)
// when there are none, so answers without files are as they were.
func filesBody(files []runner.File) map[string]fileBody {
	if len(files) == 0 {
		return nil
	}
	out := make(map[string]fileBody, len(files))
	for _, f := range files {
		out[f.Name] = fileBody{Content: f.Content, Size: len(f.Content), MediaType: mediaType(f.Name, f.Content)}
	}
	return out
}

// filesSize is the bytes of files' contents together.
func filesSize(files []runner.File) int {
	n := 0
	for _, f := range files {
		n += len(f.Content) + len(f.Name) + 64
	}
	return n
}

// mediaTypes are the types of the files data-science scripts write, by
// extension. A fixed table, so the answer does not depend on the host's
// mime.types.
var mediaTypes = map[string]string{
	".png":     "image/png",
	".jpg":     "image/jpeg",
	".jpeg":    "image/jpeg",
	".gif":     "image/gif",
	".webp":    "image/webp",
	".svg":     "image/svg+xml",
	".pdf":     "application/pdf",
	".eps":     "application/postscript",
	".csv":     "text/csv",
	".tsv":     "text/tab-separated-values",
	".txt":     "text/plain",
	".md":      "text/markdown",
	".html":    "text/html",
	".json":    "application/json",
	".jsonl":   "application/jsonl",
	".xml":     "application/xml",
	".parquet": "application/vnd.apache.parquet",
	".feather": "application/vnd.apache.arrow.file",
	".xlsx":    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".zip":     "application/zip",
	".npz":     "application/zip",
	".gz":      "application/gzip",
	".npy":     "application/octet-stream",
	".pkl":     "application/octet-stream",
}

// mediaType is the type of an output file: by its extension when known,
// else sniffed from its content (text/plain or application/octet-stream
// for most).
func mediaType(name string, content []byte) string {
	if t, ok := mediaTypes[strings.ToLower(path.Ext(name))]; ok {
		return t
	}
	return http.DetectContentType(content)
}
