import { kernelLabels, RegistryPusher, type PushedImage } from './registry-push.js';

/**
 * A few images as a Backend.AI registry holds them, pushed into the sandbox registry for the
 * demo's `mgr image rescan`: kernel images with Backend.AI labels (one multi-arch), plus one
 * without the kernelspec label that the rescan must skip.
 */
export interface DemoPushReport {
  pushed: { ref: string; architectures: string[] }[];
}

export async function pushDemoImages(registryUrl: string): Promise<DemoPushReport> {
  const pusher = new RegistryPusher(registryUrl);
  const pushed: DemoPushReport['pushed'] = [];
  const single = async (repo: string, tag: string, labels: Record<string, string>): Promise<PushedImage> => {
    const img = await pusher.image(repo, tag, { labels });
    pushed.push({ ref: `${repo}:${tag}`, architectures: ['x86_64'] });
    return img;
  };
  await single('stable/python', '3.9-ubuntu20.04', kernelLabels({ 'ai.backend.base-distro': 'ubuntu20.04' }));
  await single('stable/python', '3.10-ubuntu22.04', kernelLabels({ 'ai.backend.base-distro': 'ubuntu22.04' }));
  await single(
    'ngc/pytorch',
    '22.03-py3',
    kernelLabels({ 'ai.backend.accelerators': 'cuda', 'ai.backend.resource.min.cuda.device': '1', 'ai.backend.resource.min.mem': '4g' }),
  );
  await pusher.index('stable/tensorflow', '2.8-py38', [
    { architecture: 'amd64', labels: kernelLabels() },
    { architecture: 'arm64', labels: kernelLabels() },
  ]);
  pushed.push({ ref: 'stable/tensorflow:2.8-py38', architectures: ['x86_64', 'aarch64'] });
  // No ai.backend.kernelspec label: not a kernel image, skipped by the rescan.
  await single('tools/busybox', 'latest', { maintainer: 'ops' });
  return { pushed };
}
