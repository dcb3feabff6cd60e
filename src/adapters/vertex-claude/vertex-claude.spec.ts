import { createVerify, generateKeyPairSync } from 'node:crypto';
import { loadServiceAccount, parseServiceAccount, serviceAccountJwt } from './google-auth';
import { regionOf, toVertexBody, vertexBaseUrl, vertexUrl } from './vertex-claude.adapter';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const sa = {
  type: 'service_account',
  project_id: 'proj',
  private_key_id: 'kid-1',
  private_key: pem,
  client_email: 'gw@proj.iam.gserviceaccount.com',
  token_uri: 'https://oauth2.googleapis.com/token',
};

describe('service-account JWT', () => {
  it('is RS256-signed over the header and the claims Google asks for', () => {
    const jwt = serviceAccountJwt(parseServiceAccount(JSON.stringify(sa)), 'https://www.googleapis.com/auth/cloud-platform', 1_700_000_000);
    const [h, c, s] = jwt.split('.');
    expect(JSON.parse(Buffer.from(h, 'base64url').toString())).toEqual({ alg: 'RS256', typ: 'JWT', kid: 'kid-1' });
    expect(JSON.parse(Buffer.from(c, 'base64url').toString())).toEqual({
      iss: 'gw@proj.iam.gserviceaccount.com',
      scope: 'https://www.googleapis.com/auth/cloud-platform',
      aud: 'https://oauth2.googleapis.com/token',
      iat: 1_700_000_000,
      exp: 1_700_003_600,
    });
    expect(createVerify('RSA-SHA256').update(`${h}.${c}`).verify(publicKey, Buffer.from(s, 'base64url'))).toBe(true);
  });
});

describe('parseServiceAccount', () => {
  it('reads a key file and defaults the token URI', () => {
    const { token_uri: _t, ...rest } = sa;
    expect(parseServiceAccount(JSON.stringify(rest))).toMatchObject({
      client_email: sa.client_email,
      project_id: 'proj',
      token_uri: 'https://oauth2.googleapis.com/token',
    });
    expect(loadServiceAccount(JSON.stringify(sa)).private_key_id).toBe('kid-1');
  });

  it.each([
    ['{', /not valid JSON/],
    [JSON.stringify({ ...sa, type: 'authorized_user' }), /not service_account/],
    [JSON.stringify({ ...sa, client_email: '' }), /lack client_email/],
    [JSON.stringify({ ...sa, private_key: 'nope' }), /not a usable PEM key/],
  ])('says what is wrong with %s', (text, message) => {
    expect(() => parseServiceAccount(text)).toThrow(message);
  });

  it('names a key file it cannot read', () => {
    expect(() => loadServiceAccount('/nonexistent/key.json')).toThrow(
      /cannot read the service-account key file \/nonexistent\/key.json: ENOENT/,
    );
  });
});

describe('Vertex URLs and bodies', () => {
  it('builds the regional, global and multi-region API roots', () => {
    expect(vertexBaseUrl('us-east5')).toBe('https://us-east5-aiplatform.googleapis.com/v1');
    expect(vertexBaseUrl('global')).toBe('https://aiplatform.googleapis.com/v1');
    expect(vertexBaseUrl('eu')).toBe('https://aiplatform.eu.rep.googleapis.com/v1');
  });

  it('reads the region from an API root', () => {
    expect(regionOf('https://europe-west1-aiplatform.googleapis.com/v1')).toBe('europe-west1');
    expect(regionOf('https://aiplatform.googleapis.com/v1')).toBe('global');
    expect(regionOf('https://aiplatform.us.rep.googleapis.com/v1')).toBe('us');
    expect(regionOf('http://127.0.0.1:9/v1')).toBeUndefined();
  });

  it('puts the model and method in the URL', () => {
    const t = { baseUrl: 'https://us-east5-aiplatform.googleapis.com/v1', project: 'my-proj', region: 'us-east5' };
    expect(vertexUrl(t, 'claude-sonnet-4-5@20250929', false)).toBe(
      'https://us-east5-aiplatform.googleapis.com/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict',
    );
    expect(vertexUrl(t, 'claude-sonnet-4-5@20250929', true)).toMatch(/:streamRawPredict$/);
  });

  it('moves the version into the body and the model out of it', () => {
    expect(toVertexBody({ model: 'x', max_tokens: 5, messages: [], stream: true })).toEqual({
      max_tokens: 5,
      messages: [],
      stream: true,
      anthropic_version: 'vertex-2023-10-16',
    });
  });

  it('refuses images and documents by URL, in tool results too, as what this route cannot send', () => {
    const url = { type: 'url', url: 'https://example.com/a.pdf' };
    const body = (content: unknown) => ({ max_tokens: 5, messages: [{ role: 'user', content }] }) as never;
    expect(() => toVertexBody(body([{ type: 'document', source: url }]))).toThrow(
      expect.objectContaining({ status: 400, unsupportedByRoute: true, param: 'messages[0].content[0].source' }),
    );
    expect(() => toVertexBody(body([{ type: 'tool_result', tool_use_id: 't', content: [{ type: 'image', source: url }] }]))).toThrow(
      /Claude on Vertex AI takes images inline only/,
    );
    expect(toVertexBody(body([{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AA' } }]))).toHaveProperty(
      'messages',
    );
  });
});
