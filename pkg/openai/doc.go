// Package openai holds the OpenAI wire-format helpers that aiproxy uses on its
// hot path: the error body, a look at request bodies (model, stream,
// stream_options) with the include_usage injection, and readers that pass a
// response through unchanged while they pick up its usage, optionally
// removing what the injection added to a stream.
//
// JSON is read as encoding/json reads it: json.Valid checks an object, then
// a walk that only finds where keys and values end goes over its top-level
// members (object.go), and encoding/json decodes the few values asked for.
package openai
