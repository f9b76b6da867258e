export async function setup() {
  // nothing to prepare: the task's database opens on first use
  console.log("hello task set up");
}
