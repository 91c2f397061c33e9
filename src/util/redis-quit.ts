import type { Redis } from 'ioredis';

/**
 * Closes an ioredis connection: politely (QUIT, so replies in flight arrive) when it is up, at
 * once when it is not, or when QUIT itself fails.
 */
export async function quitRedis(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit();
      return;
    } catch {
      // fall through to a hard disconnect
    }
  }
  client.disconnect();
}
