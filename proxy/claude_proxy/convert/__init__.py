"""The pure conversion layer: OpenAI wire types, request and response mapping, stream translators; no I/O, no env."""
