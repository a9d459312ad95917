// Package openai holds the OpenAI wire-format helpers that aiproxy uses on its
// hot path: the error body, a cheap look at request bodies (model, stream,
// stream_options) with the include_usage injection, and readers that pass a
// response through unchanged while they pick up its usage, optionally
// removing what the injection added to a stream.
//
// Nothing here builds a JSON tree: the scanner in json.go finds the few
// members that matter and skips the rest.
package openai
