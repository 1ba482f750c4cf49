/**
 * The recovery ladder for a refused CONNECT (pure: no I/O, no clock). When the broker refuses the credential
 * (3.1.1 CONNACK 4 or 5, MQTT 5 reason 0x86 or 0x87), the device climbs: the store (another process may have saved
 * a newer key), then GetDeviceCredential (a changed key means rotation), then, only when the caller allows it,
 * RegisterDeviceCredential (the credential was unregistered). Each rung may hand out a different key, so one refusal
 * episode (the refusals between two accepted CONNECTs) may ask for a credential at most {@link MAX_REFETCHES} times.
 *
 * Two parts: {@link refusalDecision} bounds the episode (used by the connection for any credential source), and
 * {@link nextRung} orders the rungs (used by `registerAndConnect`'s source).
 */

/** How many times one refusal episode may ask the credential source for another credential: one per rung. */
export const MAX_REFETCHES = 3;

/** What the connection does about a refused credential. */
export type RefusalDecision =
  /** Ask the source for another credential (`{ reason: 'rejected' }`); `refetches` is the count after this one. */
  | { readonly action: 'refetch'; readonly refetches: number }
  /** Stop with `CredentialRejected`: every rung already handed out a credential that was refused too. */
  | { readonly action: 'give-up' };

/** The decision after the broker refused the credential, `refetches` credentials into the episode. */
export function refusalDecision(refetches: number, max: number = MAX_REFETCHES): RefusalDecision {
  return refetches >= max ? { action: 'give-up' } : { action: 'refetch', refetches: refetches + 1 };
}

/** What the connection does with what the source answered. */
export type SourceVerdict = 'use' | 'same-key' | 'not-a-credential' | 'other-client';

/**
 * Judge the source's answer: a new key is used at once; the very key that was just refused ends the episode (no
 * CONNECT with a key known to fail); anything else is a programming error of the source.
 */
export function judgeCredential(
  answer: { isCredential: boolean; clientId?: string; sameKeyAsRefused?: boolean },
  clientId: string,
): SourceVerdict {
  if (!answer.isCredential) return 'not-a-credential';
  if (answer.clientId !== clientId) return 'other-client';
  return answer.sameKeyAsRefused ? 'same-key' : 'use';
}

/** A rung of the ladder that `registerAndConnect` climbs for one `{ reason: 'rejected' }` request. */
export type Rung = 'store' | 'get' | 'register';

/** What a rung found. */
export type RungOutcome =
  /** The store: nothing stored, or the very key the broker refused. */
  | { readonly rung: 'store'; readonly found: 'none' | 'same-key' | 'other-key' }
  /** GetDeviceCredential: a credential, or `DeviceCredentialNotFound`. */
  | { readonly rung: 'get'; readonly found: 'credential' | 'not-found' }
  /** RegisterDeviceCredential answered with a credential. */
  | { readonly rung: 'register'; readonly found: 'credential' };

/** After a rung: use what it found, climb to the next rung, or stop (the credential is gone and may not be registered). */
export type RungDecision = { readonly next: 'use' } | { readonly next: Rung } | { readonly next: 'fail' };

/** The rung after `outcome`; `register` is reached only with `onMissing: 'register'`. */
export function nextRung(outcome: RungOutcome, onMissing: 'fail' | 'register'): RungDecision {
  switch (outcome.rung) {
    case 'store':
      return outcome.found === 'other-key' ? { next: 'use' } : { next: 'get' };
    case 'get':
      if (outcome.found === 'credential') return { next: 'use' };
      return onMissing === 'register' ? { next: 'register' } : { next: 'fail' };
    case 'register':
      return { next: 'use' };
  }
}
