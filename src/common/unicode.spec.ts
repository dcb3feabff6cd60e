import { hasLoneSurrogate, wellFormed } from './unicode';

describe('lone surrogates', () => {
  it('finds half of a pair, at either end or inside, and leaves whole pairs alone', () => {
    expect(['a\ud800b', '\udfff', 'x\ud83d', '\ude00y', '\ud83d\ude00\ud83d'].map(hasLoneSurrogate)).toEqual([
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(['', 'plain', '\ud83d\ude00', 'é\ud83d\ude00z'].map(hasLoneSurrogate)).toEqual([false, false, false, false]);
  });

  it('writes each one as U+FFFD, as a UTF-8 encoder does', () => {
    expect(wellFormed('a\ud800b\udc00\ud83d\ude00\ud83d')).toBe('a\ufffdb\ufffd\ud83d\ude00\ufffd');
    for (const s of ['a\ud800b\udc00\ud83d\ude00\ud83d', 'x\udfff', '\ud800\ud800']) {
      expect(wellFormed(s)).toBe(Buffer.from(s, 'utf8').toString('utf8'));
    }
    const plain = 'no surrogates here';
    expect(wellFormed(plain)).toBe(plain);
  });
});
