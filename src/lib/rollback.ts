/**
 * A stack of undo steps for multi-step operations: push the undo of each step as it succeeds;
 * on failure `unwind()` runs them in reverse; on success `release()` forgets them. Undo failures
 * are collected, never thrown over the original error.
 */
export type Undo = () => void | Promise<void>;

export class Rollback {
  #steps: { what: string; undo: Undo }[] = [];
  /** Errors raised by undo steps during the last unwind (for logging). */
  readonly undoErrors: { what: string; error: unknown }[] = [];

  push(what: string, undo: Undo): void {
    this.#steps.push({ what, undo });
  }

  get size(): number {
    return this.#steps.length;
  }

  release(): void {
    this.#steps = [];
  }

  async unwind(): Promise<void> {
    const steps = this.#steps.reverse();
    this.#steps = [];
    for (const s of steps) {
      try {
        await s.undo();
      } catch (error) {
        this.undoErrors.push({ what: s.what, error });
      }
    }
  }
}

/**
 * Run `body` with a fresh rollback stack: if it throws, every pushed undo runs in reverse and
 * the original error is rethrown; if it returns, the stack is released.
 */
export async function transaction<T>(body: (rb: Rollback) => Promise<T>): Promise<T> {
  const rb = new Rollback();
  try {
    const out = await body(rb);
    rb.release();
    return out;
  } catch (e) {
    await rb.unwind();
    throw e;
  }
}
