/** Express 5's router as these helpers read it. */
export type RoutedApp = { router: { stack: Array<{ route?: { methods: Record<string, boolean> }; match(path: string): unknown }> } };

/** The methods routes are declared for. */
const ROUTED_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** Whether a route serves `method` at `path`. */
export function hasRoute(app: RoutedApp, method: string, path: string): boolean {
  const m = method.toLowerCase();
  return app.router.stack.some((layer) => layer.route?.methods[m] === true && Boolean(layer.match(path)));
}

/** The methods some route serves at `path` (a 405's Allow); none for a path nothing serves or one that does not decode. */
export function allowedMethods(app: RoutedApp, path: string): string[] {
  try {
    return ROUTED_METHODS.filter((m) => hasRoute(app, m, path));
  } catch {
    return [];
  }
}
