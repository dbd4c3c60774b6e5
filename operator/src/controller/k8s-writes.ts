/**
 * The controller's writes, through @kubernetes/client-node: server-side apply (field manager `pgwarden`) for the
 * rendered ConfigMaps and the policy status, core/v1 Events, and merge patches of workload pod templates.
 * Writes that follow a read carry the resourceVersion read as a precondition, so a write by someone else in between
 * fails with 409 Conflict instead of being overwritten
 * (https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions); see conflict-retry.ts.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { MaskingRuleStatus, PolicyStatus } from './policy-status.js';

export const FIELD_MANAGER = 'pgwarden';
const PGWARDEN_GROUP = { group: 'pgwarden.dev', version: 'v1alpha1' } as const;
const PLURALS: Record<string, string> = { DatabaseAccessPolicy: 'databaseaccesspolicies', MaskingRule: 'maskingrules' };

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid?: string;
}

export class K8sWrites {
  private readonly objects: KubernetesObjectApi;
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;

  constructor(
    kc: KubeConfig,
    private readonly component = 'pgwarden-operator',
  ) {
    this.objects = KubernetesObjectApi.makeApiClient(kc);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  /**
   * https://kubernetes.io/docs/reference/using-api/server-side-apply/ — force: the operator owns these objects. Only
   * onto the version `resourceVersion` that the caller read and judged (a resourceVersion in the applied
   * configuration is a precondition): 409 Conflict if it changed since.
   */
  async applyConfigMap(cm: Record<string, any>, resourceVersion: string): Promise<Record<string, any>> {
    const body = { ...cm, metadata: { ...cm.metadata, resourceVersion } };
    return this.objects.patch(body as any, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  }

  /**
   * Creates a ConfigMap the caller found absent: 409 AlreadyExists if someone created it meanwhile (an apply would
   * silently take theirs over).
   */
  async createConfigMap(cm: Record<string, any>): Promise<Record<string, any>> {
    return this.objects.create(cm as any, undefined, undefined, FIELD_MANAGER);
  }

  /** The live ConfigMap, or undefined when it does not exist. */
  async readConfigMap(namespace: string, name: string): Promise<Record<string, any> | undefined> {
    try {
      return JSON.parse(JSON.stringify(await this.core.readNamespacedConfigMap({ namespace, name })));
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /**
   * Deletes a ConfigMap, only if it is still the object and version the caller read (preconditions: one recreated
   * or changed meanwhile by someone else is not ours to delete).
   */
  async deleteConfigMap(namespace: string, name: string, uid: string, resourceVersion: string): Promise<void> {
    await this.core.deleteNamespacedConfigMap({ namespace, name, body: { preconditions: { uid, resourceVersion } } });
  }

  /** A pgwarden.dev object as the API server has it now (not the informer cache), or undefined when it is gone. */
  async readCustomObject(ref: ObjectRef): Promise<Record<string, any> | undefined> {
    try {
      return await this.custom.getNamespacedCustomObject({
        ...PGWARDEN_GROUP,
        plural: PLURALS[ref.kind],
        namespace: ref.namespace,
        name: ref.name,
      });
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /** A JSON merge patch (RFC 7386) by the operator's field manager: fields it names, and null removes a key. */
  private mergePatch(obj: object) {
    return this.objects.patch(obj as any, undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch);
  }

  /**
   * Removes data/binaryData keys from a ConfigMap (JSON merge patch: null deletes). Server-side apply cannot: keys
   * another field manager added are not the applier's to drop. Only from the version read (`resourceVersion`, a
   * precondition); returns the object after the patch.
   */
  async removeConfigMapKeys(
    namespace: string,
    name: string,
    keys: { data: string[]; binaryData: string[] },
    resourceVersion: string,
  ): Promise<Record<string, any>> {
    const nulls = (ks: string[]) => (ks.length ? Object.fromEntries(ks.map((k) => [k, null])) : undefined);
    return this.mergePatch({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name, namespace, resourceVersion },
      data: nulls(keys.data),
      binaryData: nulls(keys.binaryData),
    });
  }

  /**
   * Server-side apply to the status subresource of a pgwarden.dev object, computed from its version
   * `resourceVersion` (a precondition: 409 Conflict when the object changed since, spec or status).
   */
  async applyStatus(
    ref: ObjectRef,
    status: PolicyStatus | MaskingRuleStatus,
    resourceVersion: string | undefined,
  ): Promise<void> {
    await this.custom.patchNamespacedCustomObjectStatus(
      {
        ...PGWARDEN_GROUP,
        plural: PLURALS[ref.kind],
        namespace: ref.namespace,
        name: ref.name,
        body: {
          apiVersion: ref.apiVersion,
          kind: ref.kind,
          metadata: { name: ref.name, namespace: ref.namespace, resourceVersion },
          status,
        },
        fieldManager: FIELD_MANAGER,
        force: true,
      },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
  }

  /** A core/v1 Event about `ref` (shown by `kubectl describe` and `kubectl get events`). */
  async recordEvent(ref: ObjectRef, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    const now = new Date();
    await this.core.createNamespacedEvent({
      namespace: ref.namespace,
      body: {
        metadata: { generateName: `${ref.name}.`, namespace: ref.namespace },
        involvedObject: {
          apiVersion: ref.apiVersion,
          kind: ref.kind,
          name: ref.name,
          namespace: ref.namespace,
          uid: ref.uid,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: this.component },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  }

  /** Sets one pod-template annotation on a workload: a template change is what makes its controller roll pods. */
  async annotatePodTemplate(
    apiVersion: string,
    kind: string,
    namespace: string,
    name: string,
    key: string,
    value: string,
  ) {
    await this.mergePatch({
      apiVersion,
      kind,
      metadata: { name, namespace },
      spec: { template: { metadata: { annotations: { [key]: value } } } },
    });
  }

  /** Sets one annotation on a running pod (merge patch); false when the pod is gone. */
  async annotatePod(namespace: string, name: string, key: string, value: string): Promise<boolean> {
    try {
      await this.mergePatch({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, annotations: { [key]: value } },
      });
      return true;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return false;
      throw err;
    }
  }

  /** A Secret's data (base64 values as stored), or undefined when it does not exist. */
  async readSecretData(namespace: string, name: string): Promise<Record<string, string> | undefined> {
    return (await this.readSecret(namespace, name))?.data;
  }

  /** The live Secret (metadata, type, data), or undefined when it does not exist. */
  async readSecret(
    namespace: string,
    name: string,
  ): Promise<{ metadata: Record<string, any>; type?: string; data: Record<string, string> } | undefined> {
    try {
      const s = await this.core.readNamespacedSecret({ namespace, name });
      return { metadata: JSON.parse(JSON.stringify(s.metadata ?? {})), type: s.type, data: { ...(s.data ?? {}) } };
    } catch (err) {
      if ((err as { code?: number }).code === 404) return undefined;
      throw err;
    }
  }

  /**
   * Server-side apply of a Secret the operator owns (an audit Secret's copy), only onto the version the caller read
   * (`resourceVersion` as a precondition: 409 Conflict if someone changed or replaced it since).
   */
  async applySecret(secret: Record<string, any>, resourceVersion: string): Promise<void> {
    const body = { ...secret, metadata: { ...secret.metadata, resourceVersion } };
    await this.objects.patch(body as any, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
  }

  /** Creates a Secret the caller found absent: 409 AlreadyExists if someone created one meanwhile. */
  async createSecret(secret: Record<string, any>): Promise<void> {
    await this.objects.create(secret as any, undefined, undefined, FIELD_MANAGER);
  }

  async listWorkloads(apiVersion: string, kind: string, namespace: string): Promise<Record<string, any>[]> {
    const res = await this.objects.list(apiVersion, kind, namespace);
    return JSON.parse(JSON.stringify(res.items));
  }
}
