/**
 * The recovery ladder for a refused CONNECT (pure: no I/O, no clock). When the broker refuses the credential
 * (3.1.1 CONNACK 4 or 5, MQTT 5 reason 0x86 or 0x87), the device climbs: the store (another process may have saved
 * a newer key), then GetDeviceCredential (a changed key means rotation), then, only when the caller allows it,
 * RegisterDeviceCredential (the credential was unregistered). Each rung may hand out a different key, so one refusal
 * episode (the refusals between two accepted CONNECTs) may ask for a credential at most {@link MAX_REFETCHES} times.
 *
 * {@link refusalDecision} bounds the episode (for any credential source); {@link judgeCredential} judges each answer.
 * The rungs themselves are the source's: `Provisioner.credentialSource` climbs the store and GetDeviceCredential,
 * and `registerAndConnect`'s source adds RegisterDeviceCredential.
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
