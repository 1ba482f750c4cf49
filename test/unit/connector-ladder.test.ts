import { describe, expect, it } from 'vitest';
import { MAX_REFETCHES, judgeCredential, refusalDecision } from '../../src/connector/ladder.js';

describe('the refusal episode', () => {
  it('asks for a credential at most MAX_REFETCHES (3) times, one per rung', () => {
    expect(MAX_REFETCHES).toBe(3);
    expect(refusalDecision(0)).toEqual({ action: 'refetch', refetches: 1 });
    expect(refusalDecision(1)).toEqual({ action: 'refetch', refetches: 2 });
    expect(refusalDecision(2)).toEqual({ action: 'refetch', refetches: 3 });
    expect(refusalDecision(3)).toEqual({ action: 'give-up' });
    expect(refusalDecision(0, 0)).toEqual({ action: 'give-up' });
  });

  it('uses a new key, stops on the refused key, and calls anything else a programming error', () => {
    expect(judgeCredential({ isCredential: true, clientId: 'GID_a@@@1', sameKeyAsRefused: false }, 'GID_a@@@1')).toBe('use');
    expect(judgeCredential({ isCredential: true, clientId: 'GID_a@@@1', sameKeyAsRefused: true }, 'GID_a@@@1')).toBe('same-key');
    expect(judgeCredential({ isCredential: true, clientId: 'GID_a@@@2', sameKeyAsRefused: false }, 'GID_a@@@1')).toBe('other-client');
    expect(judgeCredential({ isCredential: false }, 'GID_a@@@1')).toBe('not-a-credential');
  });
});
