import { existsSync, readFileSync } from 'node:fs';
import { Inject, Injectable, Logger } from '@nestjs/common';
import { ACCEPTED_CONFIG_ENV } from '../cluster';
import { AppConfig } from './app-config';
import { parseModels } from './models.parser';
import type { ModelDef, RoutingDef } from './registry.types';
import { EMPTY_ROUTING, parseRouting } from './routing.parser';
import { readConfigFile, YamlSource } from './yaml-source';

/** Variables `${VAR}` in the YAML files expand from: the process environment at boot. */
export const CONFIG_VARS = Symbol('CONFIG_VARS');
export type ConfigVars = Readonly<Record<string, string | undefined>>;

/**
 * OpenRouter's routing variants: a suffix that names the same model with a routing preference
 * (`:nitro` fastest, `:floor` cheapest, `:exacto` its quality-first order), read by the router.
 */
export const ROUTING_VARIANTS = ['nitro', 'floor', 'exacto'] as const;
export type RoutingVariant = (typeof ROUTING_VARIANTS)[number];

/** `name` as a model name and one of the routing variants (`id:nitro`), if it ends in one. */
export function routingVariant(name: string): { base: string; variant: RoutingVariant } | undefined {
  const i = name.lastIndexOf(':');
  if (i <= 0) return undefined;
  const suffix = name.slice(i + 1);
  return (ROUTING_VARIANTS as readonly string[]).includes(suffix)
    ? { base: name.slice(0, i), variant: suffix as RoutingVariant }
    : undefined;
}

/** One consistent view of models.yaml and routing.yaml. Requests hold on to the one they started with. */
export class RegistrySnapshot {
  private readonly byName = new Map<string, ModelDef>();

  constructor(
    readonly models: readonly ModelDef[],
    readonly routing: RoutingDef,
    readonly loadedAt: Date,
    readonly warnings: readonly string[] = [],
    readonly notices: readonly string[] = [],
  ) {
    for (const m of models) {
      this.byName.set(m.id, m);
      for (const alias of m.aliases) this.byName.set(alias, m);
    }
  }

  /**
   * By id or alias; also with one of OpenRouter's routing variants (`id:nitro`, ...), which name
   * the same model with a routing preference (read by the router from the request's model name).
   */
  find(name: string): ModelDef | undefined {
    const m = this.byName.get(name);
    if (m) return m;
    const v = routingVariant(name);
    return v && this.byName.get(v.base);
  }
}

/**
 * Checks a freshly parsed snapshot against what only other modules know (adapter kinds,
 * strategies): returns the problems that refuse it, and `warn`s of what is probably wrong but
 * servable (a mistyped route key).
 */
export type SnapshotValidator = (snapshot: RegistrySnapshot, warn: (message: string) => void) => string[];

@Injectable()
export class ModelRegistry {
  private readonly logger = new Logger('ModelRegistry');
  private snapshot: RegistrySnapshot;
  private readonly validators: SnapshotValidator[] = [];
  /** `created` of a model that sets none: the start, kept across reloads (clients cache by it). */
  private readonly startedAt = Math.floor(Date.now() / 1000);
  /** Whether the routing in force came from a routing file with settings in it (see reload). */
  private routingFromFile: boolean;
  private accepted: ConfigTexts;

  constructor(
    private readonly config: AppConfig,
    @Inject(CONFIG_VARS) private readonly vars: ConfigVars,
  ) {
    const read = this.readFiles(acceptedAtStart());
    this.snapshot = read.snapshot;
    this.routingFromFile = read.routingFromFile;
    this.accepted = read.texts;
    this.report(this.snapshot);
    if (this.snapshot.models.length === 0)
      this.logger.warn(`${this.config.env.MODELS_CONFIG_PATH} defines no models: every model request gets a 404 until it does`);
  }

  current(): RegistrySnapshot {
    return this.snapshot;
  }

  /** The text of the files the configuration in force was read from (`routing`: none without a routing file). */
  acceptedConfig(): ConfigTexts {
    return this.accepted;
  }

  resolve(name: string): ModelDef | undefined {
    return this.snapshot.find(name);
  }

  addValidator(validator: SnapshotValidator): void {
    this.validators.push(validator);
  }

  /** Problems the registered validators find in a snapshot (empty when it is fit to serve). */
  validate(snapshot: RegistrySnapshot, warn: (message: string) => void = () => undefined): string[] {
    return this.validators.flatMap((v) => v(snapshot, warn));
  }

  /**
   * Reads and fully validates both files, then swaps them in at once. On any problem the old
   * configuration stays and the error says what was wrong.
   */
  reload(): RegistrySnapshot {
    const read = this.readFiles();
    const { snapshot: parsed, routingFromFile } = read;
    const warnings = [...parsed.warnings];
    const problems = this.validate(parsed, (w) => warnings.push(w));
    // A file caught half-written (or emptied by mistake) must not take every model away at once.
    if (parsed.models.length === 0)
      problems.unshift(`${this.config.env.MODELS_CONFIG_PATH} defines no models; a reload never leaves the gateway without any`);
    // Likewise a routing file gone or emptied (a copy caught half-way) must not put the built-in
    // defaults (no health checks, default circuits and retries) in place of the operator's.
    if (this.routingFromFile && !routingFromFile)
      problems.unshift(
        `${this.config.env.ROUTING_CONFIG_PATH} is missing or empty; a reload keeps the routing it had (to go back to the built-in defaults, restart)`,
      );
    if (problems.length > 0) throw new Error(`configuration refused:\n  ${problems.join('\n  ')}`);
    // The validators' warnings join the parser's, for the log and the reload's answer.
    const next = new RegistrySnapshot(parsed.models, parsed.routing, parsed.loadedAt, warnings, parsed.notices);
    this.snapshot = next;
    this.routingFromFile = routingFromFile;
    this.accepted = read.texts;
    this.report(next);
    return next;
  }

  private report(s: RegistrySnapshot): void {
    for (const n of s.notices) this.logger.log(n);
    for (const w of s.warnings) this.logger.warn(w);
  }

  /**
   * Both files, parsed (or `given`, their text as workers accepted it: see acceptedAtStart); and
   * whether routing came from a routing file with settings in it.
   */
  private readFiles(given?: ConfigTexts): { snapshot: RegistrySnapshot; routingFromFile: boolean; texts: ConfigTexts } {
    const warnings: string[] = [];
    const notices: string[] = [];
    const warn = (m: string) => warnings.push(m);
    const routingPath = this.config.env.ROUTING_CONFIG_PATH;
    const modelsPath = this.config.env.MODELS_CONFIG_PATH;
    const routingText = given ? given.routing : existsSync(routingPath) ? readConfigFile(routingPath) : null;
    const routingSource = routingText !== null ? YamlSource.parse(routingPath, routingText, this.vars) : undefined;
    const routing = routingSource ? parseRouting(routingSource, warn) : EMPTY_ROUTING;
    // The bundled file may be left out; a path someone set and mistyped should not go unnoticed.
    if (routingText === null && this.vars.ROUTING_CONFIG_PATH?.trim())
      notices.push(`ROUTING_CONFIG_PATH ${routingPath} does not exist: the built-in routing defaults apply`);
    const modelsText = given ? given.models : readConfigFile(modelsPath);
    const models = parseModels(YamlSource.parse(modelsPath, modelsText, this.vars), {
      routing,
      defaultCreated: this.startedAt,
      warn,
      notice: (m) => notices.push(m),
    });
    return {
      snapshot: new RegistrySnapshot(models, routing, new Date(), warnings, notices),
      routingFromFile: routingSource?.value !== undefined && routingSource.value !== null,
      texts: { models: modelsText, routing: routingText },
    };
  }
}

/** The text of models.yaml and routing.yaml (null: no routing file). */
export interface ConfigTexts {
  models: string;
  routing: string | null;
}

/**
 * A worker started in place of one that died: the config the workers accepted last, from the
 * primary (ACCEPTED_CONFIG_ENV), rather than the files, which may hold what a reload refused.
 */
function acceptedAtStart(): ConfigTexts | undefined {
  const file = process.env[ACCEPTED_CONFIG_ENV];
  if (!file) return undefined;
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as Partial<ConfigTexts>;
    if (typeof v.models === 'string' && (typeof v.routing === 'string' || v.routing === null))
      return { models: v.models, routing: v.routing };
  } catch {
    // Gone or unreadable: the files, as at any start.
  }
  return undefined;
}
