import { CLAUDE_CODE_IDENTITY, subscriptionResetAt, withClaudeCodeIdentity } from './claude-code';

describe('Claude Code identity', () => {
  const identity = { type: 'text', text: CLAUDE_CODE_IDENTITY };

  it('puts the identity first, whatever shape the system prompt has, and never twice', () => {
    expect(withClaudeCodeIdentity<{ model: string; system?: unknown }>({ model: 'm' })).toEqual({ model: 'm', system: [identity] });
    expect(withClaudeCodeIdentity({ system: 'Be brief.' }).system).toEqual([identity, { type: 'text', text: 'Be brief.' }]);
    const cached = [{ type: 'text', text: 'Rules', cache_control: { type: 'ephemeral' } }];
    expect(withClaudeCodeIdentity({ system: cached }).system).toEqual([identity, ...cached]);
    const already = { system: [identity, { type: 'text', text: 'More' }] };
    expect(withClaudeCodeIdentity(already)).toBe(already);
    const asString = { system: `${CLAUDE_CODE_IDENTITY}\nMore` };
    expect(withClaudeCodeIdentity(asString)).toBe(asString);
  });
});

describe('subscriptionResetAt', () => {
  const now = Date.UTC(2026, 0, 1);

  it('reads the unified reset (epoch seconds), else Retry-After', () => {
    expect(subscriptionResetAt({ 'anthropic-ratelimit-unified-reset': '1767229200', 'retry-after': '5' }, now)).toBe(1767229200_000);
    expect(subscriptionResetAt({ 'retry-after': '30' }, now)).toBe(now + 30_000);
    expect(subscriptionResetAt({ 'retry-after': new Date(now + 60_000).toUTCString() }, now)).toBe(now + 60_000);
    expect(subscriptionResetAt({}, now)).toBeUndefined();
    expect(subscriptionResetAt({ 'anthropic-ratelimit-unified-reset': 'soon' }, now)).toBeUndefined();
  });

  it("takes the window's reset only when the subscription's limit is spent (unified status rejected)", () => {
    const reset = { 'anthropic-ratelimit-unified-reset': '1767229200', 'retry-after': '5' };
    expect(subscriptionResetAt({ ...reset, 'anthropic-ratelimit-unified-status': 'rejected' }, now)).toBe(1767229200_000);
    // A 429 for too many connections at once: the quota is not spent, the account rests 5 s.
    expect(subscriptionResetAt({ ...reset, 'anthropic-ratelimit-unified-status': 'allowed' }, now)).toBe(now + 5_000);
    expect(subscriptionResetAt({ ...reset, 'anthropic-ratelimit-unified-status': 'allowed_warning' }, now)).toBe(now + 5_000);
    expect(
      subscriptionResetAt({ 'anthropic-ratelimit-unified-reset': '1767229200', 'anthropic-ratelimit-unified-status': 'allowed' }, now),
    ).toBeUndefined();
  });
});
