package server

import (
	"net/http"
	"path"
	"strings"
)

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
