import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { type ConnectionState, type CoreOptions, type Input, type Model, initialModel, step } from '../../src/connector/state.js';

// ARCHITECTURE.md draws the connection's state machine; this keeps the drawing true: every edge is driven through
// step() from a model in the edge's source state, and must land in its target state. An edge the test cannot
// drive (a label without a fixture below) fails too, so the drawing cannot drift from the code unnoticed.

const doc = readFileSync(new URL('../../ARCHITECTURE.md', import.meta.url), 'utf8');
const diagram = /```mermaid\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';
const edges = [...diagram.matchAll(/^\s*([a-z-]+) --> ([a-z-]+) : (.+)$/gm)].map(([, from, to, label]) => ({
  from: from as ConnectionState,
  to: to as ConnectionState,
  label: (label as string).trim(),
}));

const options: CoreOptions = {
  protocolVersion: 4,
  reconnect: { minDelayMs: 100, maxDelayMs: 1_000 },
  takeover: false,
  stableSessionMs: 10_000,
  maxRefetches: 3,
};

/** The model an edge starts from, and the input that drives it, by the edge's label. */
const fixtures: Record<string, { model?: Partial<Model>; input: Input }> = {
  accepted: { input: { type: 'accepted', now: 0 } },
  'refused credential': { input: { type: 'refused', code: 4 } },
  'refused unavailable (after the first session)': { model: { first: false }, input: { type: 'refused', code: 3 } },
  'refused identifier or permanent': { input: { type: 'refused', code: 2 } },
  'failed (after the first session)': { model: { first: false }, input: { type: 'failed', failure: 'unreachable' } },
  'failed (first connect)': { input: { type: 'failed', failure: 'unreachable' } },
  lost: { model: { first: false }, input: { type: 'lost', end: { kind: 'closed' }, now: 1 } },
  'lost on a token invalid notice': { model: { first: false }, input: { type: 'lost', end: { kind: 'token', code: 2 }, now: 1 } },
  'end graceful': { input: { type: 'end', graceful: true } },
  'end force': { input: { type: 'end', graceful: false } },
  timer: { input: { type: 'timer' } },
  'credential use': { input: { type: 'credential', verdict: 'use' } },
  'credential same-key': { input: { type: 'credential', verdict: 'same-key' } },
  'source-failed retryable (after the first session)': { model: { first: false, refetches: 1 }, input: { type: 'source-failed', retryable: true } },
  'source-failed (first connect)': { input: { type: 'source-failed', retryable: true } },
  flushed: { input: { type: 'flushed' } },
  abort: { input: { type: 'abort' } },
};

describe('ARCHITECTURE.md: the state diagram', () => {
  it('draws every state of ConnectionState', () => {
    const drawn = new Set(edges.flatMap((e) => [e.from, e.to]));
    const states: ConnectionState[] = ['connecting', 'online', 'backing-off', 'refetching-credential', 'closing', 'closed'];
    expect([...drawn].sort()).toEqual([...states].sort());
  });

  it.each(edges)('$from --> $to : $label', ({ from, to, label }) => {
    const fixture = fixtures[label];
    expect(fixture, `no fixture for the edge label "${label}": add one to this test`).toBeDefined();
    const model: Model = { ...initialModel(), ...fixture?.model, state: from };
    const next = step(model, (fixture as { input: Input }).input, options, () => 0.5);
    expect(next.model.state).toBe(to);
  });
});
