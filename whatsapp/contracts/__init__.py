"""The two wire contracts, pure pydantic, shared with the AI service's side (classifier/).

- result: the AI-result event we consume on `ai.process.result` (v1), and parse_event;
- request: the request event we publish on `ai.process.request` (v1), and its derived ids;
- fields: the field types and the customer both contracts share;
- json_input: reading a record's bytes as JSON strictly (duplicate keys, NaN, giant numbers);
- errors: ContractError and error lines that never echo the input.

A helper layer: pydantic only; never a stage of this app, nor leads, dlq or core (an
import-linter contract), so the classifier can import it without the runtime.
"""
