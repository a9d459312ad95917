// Package openai holds the OpenAI wire-format helpers that aiproxy uses on its
// hot path: the error body, a look at request bodies (model, stream,
// stream_options) with the include_usage injection, and readers that pass a
// response through unchanged while they pick up its usage, optionally
// removing what the injection added to a stream.
//
// JSON is read with encoding/json: a json.Decoder walks the top-level members
// of an object (object.go) and skips the values nobody asked for.
package openai
