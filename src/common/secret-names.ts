/**
 * Names of URL query parameters and HTTP headers that carry a credential (`?key=`, `?sig=`, Azure
 * Functions' `?code=`, `api-key:`, `x-goog-api-key:`, `Authorization:`): what the admin view
 * blanks in an upstream URL, and what an upstream's error text is cleaned of before a client sees it.
 */
export const SECRET_NAME = /key|token|secret|sig|passw|pwd|^pass$|auth|code|credential|cookie/i;
