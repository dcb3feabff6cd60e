import cluster from 'node:cluster';
import { Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { CONFIG_ACCEPTED, RELOAD_OTHERS } from '../cluster';
import { takeEarlySighup, holdSighup } from '../common/early-sighup';
import { ModelRegistry, type RegistrySnapshot } from '../config/model-registry.service';
import { EndpointHealthService } from './endpoint-health.service';
import { RouteStateService } from './route-state.service';
import { SharedStateService } from './shared-state.service';

/**
 * Reloads models.yaml and routing.yaml on SIGHUP or POST /admin/routing/reload: the new files
 * are parsed and validated completely, then swapped in at once. Requests in flight finish on the
 * snapshot they started with; a bad file is refused with the reason and the old config stays.
 * Circuit, health and latency state carry over for routes that keep their model and id.
 */
@Injectable()
export class RoutingReloadService implements OnApplicationBootstrap, OnApplicationShutdown {
  private readonly logger = new Logger('RoutingReload');
  private readonly onSignal = () => {
    try {
      this.reload('SIGHUP');
    } catch {
      // Logged by reload().
    }
  };

  constructor(
    private readonly registry: ModelRegistry,
    private readonly state: RouteStateService,
    private readonly health: EndpointHealthService,
    private readonly shared: SharedStateService,
  ) {}

  onApplicationBootstrap(): void {
    this.tellPrimary();
    process.on('SIGHUP', this.onSignal);
    // One that came while the app was starting: the files may have changed after they were read.
    if (takeEarlySighup()) this.onSignal();
  }

  onApplicationShutdown(): void {
    process.off('SIGHUP', this.onSignal);
    holdSighup();
  }

  /** Throws, with every problem found, when the new files are refused (and logs the refusal). */
  reload(via: 'SIGHUP' | 'admin API'): RegistrySnapshot {
    let snap: RegistrySnapshot;
    try {
      snap = this.registry.reload();
    } catch (err) {
      this.logger.error(`${via}: the new configuration was refused, the old one stays: ${(err as Error).message}`);
      throw err;
    }
    this.tellPrimary();
    this.state.retain(snap.models);
    this.health.configure();
    this.shared.configure();
    this.logger.log(`configuration reloaded: ${snap.models.length} models, default strategy ${snap.routing.strategy}`);
    return snap;
  }

  /** In a multi-process gateway, the config this worker took, for the primary to start replacements with (CONFIG_ACCEPTED). */
  private tellPrimary(): void {
    if (!cluster.isWorker || !process.send) return;
    process.send({ type: CONFIG_ACCEPTED, ...this.registry.acceptedConfig() }, undefined, undefined, () => undefined);
  }

  /** In a multi-process gateway, has the primary send SIGHUP to the other workers. */
  reloadOthers(): boolean {
    if (!cluster.isWorker || !process.send) return false;
    process.send({ type: RELOAD_OTHERS });
    return true;
  }
}
