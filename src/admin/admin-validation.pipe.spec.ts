import { InvalidRequestError } from '../common/errors';
import { refuseReservedKeys } from './admin-validation.pipe';

const refusal = (body: unknown): InvalidRequestError => {
  try {
    refuseReservedKeys(body, 'request body');
  } catch (err) {
    return err as InvalidRequestError;
  }
  throw new Error('not refused');
};

describe('refuseReservedKeys', () => {
  it('names reserved names at the top level and nested, by path', () => {
    const err = refusal(JSON.parse('{"constructor": 1, "metadata": {"a": {"__proto__": {}}}, "list": [{"prototype": 0}]}'));
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(err.param).toBe('constructor, metadata.a.__proto__, list.0.prototype');
    expect(err.message).toBe(
      'Invalid request body: property constructor should not exist; key metadata.a.__proto__ is a reserved name; key list.0.prototype is a reserved name',
    );
    expect(() => refuseReservedKeys({ name: 'k', metadata: { constructed: 'x', proto: [1] } }, 'request body')).not.toThrow();
  });

  it('lists ten of a body full of them, without overflowing the stack or writing megabytes', () => {
    const body = JSON.parse(`{"name": "k", "x": {"a": [${Array(200_000).fill('{"constructor": 1}').join(',')}]}}`) as unknown;
    const err = refusal(body);
    expect(err.param!.split(', ')).toHaveLength(10);
    expect(err.message.length).toBeLessThan(1000);
  });
});
